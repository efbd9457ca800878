# Supply-chain tiers, by the namespace label `verdict.dev/tier` (data.inventory):
# - `prod`: every image has a verified SLSA provenance attestation (v1 or v0.2) whose builder
#   is in data.settings.tiers.builders, whose source repository is in
#   data.settings.tiers.repositories, and whose signer matches one of
#   data.settings.tiers.release_signers (regular expressions over "subject (issuer)");
# - `dev`: every image has a verified signature (or attestation) of some image policy.
# Namespaces without the label are not tiered. Attestations reach input.images[*].attestations
# only when an image policy's authority asks for them (see settings/tiers.yaml).
package verdict.images.tiers

import data.verdict.lib

tier := lib.namespace_labels["verdict.dev/tier"]

default settings := {}

settings := data.settings.tiers

provenance_types := {"https://slsa.dev/provenance/v1", "https://slsa.dev/provenance/v0.2"}

# The builder: SLSA v1 `runDetails.builder.id`, v0.2 `builder.id`.
builder(predicate) := predicate.runDetails.builder.id

builder(predicate) := predicate.builder.id if not predicate.runDetails

# The source repository: SLSA v1 GitHub workflow parameters, v0.2 `invocation.configSource.uri`
# (`git+https://github.com/acme/app@refs/tags/v1` -> `https://github.com/acme/app`).
source(predicate) := predicate.buildDefinition.externalParameters.workflow.repository

source(predicate) := trim_prefix(split(predicate.invocation.configSource.uri, "@")[0], "git+") if {
	not predicate.buildDefinition
}

release_signer(signer) if {
	some pattern in object.get(settings, "release_signers", [])
	regex.match(pattern, signer)
}

good_provenance(image) if {
	some attestation in image.attestations
	attestation.type in provenance_types
	builder(attestation.predicate) in object.get(settings, "builders", [])
	source(attestation.predicate) in object.get(settings, "repositories", [])
	release_signer(attestation.signer)
}

# What provenance the image has, for the message.
found(image) := "none" if {
	count([a | some a in image.attestations; a.type in provenance_types]) == 0
} else := concat("; ", [sprintf("builder %q, source %q, signer %q", [b, s, a.signer]) |
	some a in image.attestations
	a.type in provenance_types
	b := object.get(a.predicate, ["runDetails", "builder", "id"], object.get(a.predicate, ["builder", "id"], "?"))
	s := object.get(a.predicate, ["buildDefinition", "externalParameters", "workflow", "repository"], object.get(a.predicate, ["invocation", "configSource", "uri"], "?"))
])

deny contains {"code": "TIER_PROVENANCE_REQUIRED", "msg": msg} if {
	not lib.exempt
	tier == "prod"
	some image in input.images
	not good_provenance(image)
	msg := sprintf(
		"%s uses image %q in a tier=prod namespace without verified SLSA provenance from an allowed builder and source repository, signed by the release identity (provenance found: %s). Release it through the release workflow (which attests provenance), or deploy it to a dev namespace",
		[lib.describe(image), image.reference, found(image)],
	)
}

deny contains {"code": "TIER_SIGNATURE_REQUIRED", "msg": msg} if {
	not lib.exempt
	tier == "dev"
	some image in input.images
	count(image.signatures) == 0
	msg := sprintf(
		"%s uses image %q in a tier=dev namespace, but no image policy verified a signature for it. Sign it (cosign sign) with an identity an image policy trusts",
		[lib.describe(image), image.reference],
	)
}
