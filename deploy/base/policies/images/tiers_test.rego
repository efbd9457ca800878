package verdict.images.tiers_test

import data.verdict.images.tiers

release := "https://github.com/acme/app/.github/workflows/release.yaml@refs/tags/v1.0.0 (https://token.actions.githubusercontent.com)"

builder := "https://github.com/actions/runner/github-hosted"

settings := {
	"builders": [builder],
	"repositories": ["https://github.com/acme/app"],
	"release_signers": ["^https://github\\.com/acme/[^/]+/\\.github/workflows/release\\.yaml@refs/tags/v.* \\(https://token\\.actions\\.githubusercontent\\.com\\)$"],
}

labels(tier) := {"cluster": {"v1": {"Namespace": {"shop": {"metadata": {"labels": {"verdict.dev/tier": tier}}}}}}}

slsa_v1(builder_id, repo, signer) := {
	"type": "https://slsa.dev/provenance/v1",
	"signer": signer,
	"predicate": {
		"buildDefinition": {"externalParameters": {"workflow": {"repository": repo}}},
		"runDetails": {"builder": {"id": builder_id}},
	},
}

slsa_v02(builder_id, uri, signer) := {
	"type": "https://slsa.dev/provenance/v0.2",
	"signer": signer,
	"predicate": {"builder": {"id": builder_id}, "invocation": {"configSource": {"uri": uri}}},
}

review(attestations, signatures) := {
	"request": {"namespace": "shop"},
	"images": [{
		"kind": "container", "container": "app", "reference": "ghcr.io/acme/app:v1",
		"attestations": attestations, "signatures": signatures,
	}],
}

test_prod_admits_release_provenance_v1 if {
	r := review([slsa_v1(builder, "https://github.com/acme/app", release)], [{}])
	count(tiers.deny) == 0 with input as r with data.inventory as labels("prod") with data.settings.tiers as settings
}

test_prod_admits_release_provenance_v02 if {
	r := review([slsa_v02(builder, "git+https://github.com/acme/app@refs/tags/v1.0.0", release)], [{}])
	count(tiers.deny) == 0 with input as r with data.inventory as labels("prod") with data.settings.tiers as settings
}

test_prod_denies_image_with_only_a_signature if {
	r := review([], [{"identity": release}])
	some d in tiers.deny with input as r with data.inventory as labels("prod") with data.settings.tiers as settings
	d.code == "TIER_PROVENANCE_REQUIRED"
	contains(d.msg, "container \"app\"")
	contains(d.msg, "provenance found: none")
}

test_prod_denies_unknown_builder if {
	r := review([slsa_v1("https://evil.example/builder", "https://github.com/acme/app", release)], [{}])
	some d in tiers.deny with input as r with data.inventory as labels("prod") with data.settings.tiers as settings
	d.code == "TIER_PROVENANCE_REQUIRED"
	contains(d.msg, "https://evil.example/builder")
}

test_prod_denies_other_source_repository if {
	r := review([slsa_v1(builder, "https://github.com/mallory/app", release)], [{}])
	count(tiers.deny) == 1 with input as r with data.inventory as labels("prod") with data.settings.tiers as settings
}

test_prod_denies_provenance_signed_by_someone_else if {
	signer := "https://github.com/acme/app/.github/workflows/ci.yaml@refs/heads/main (https://token.actions.githubusercontent.com)"
	r := review([slsa_v1(builder, "https://github.com/acme/app", signer)], [{}])
	count(tiers.deny) == 1 with input as r with data.inventory as labels("prod") with data.settings.tiers as settings
}

test_dev_needs_only_a_signature if {
	count(tiers.deny) == 0 with input as review([], [{"identity": "anyone"}])
		with data.inventory as labels("dev") with data.settings.tiers as settings
	some d in tiers.deny with input as review([], [])
		with data.inventory as labels("dev") with data.settings.tiers as settings
	d.code == "TIER_SIGNATURE_REQUIRED"
}

test_untiered_namespaces_are_not_judged if {
	count(tiers.deny) == 0 with input as review([], [])
		with data.inventory as {} with data.settings.tiers as settings
}
