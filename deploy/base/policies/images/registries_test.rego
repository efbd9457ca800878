package verdict.images.registries_test

import data.verdict.images.registries

review(ns, registry) := {"request": {"namespace": ns}, "images": [{"kind": "init", "container": "setup", "reference": "x", "registry": registry}]}

test_admits_allowed_registry if {
	count(registries.deny) == 0 with input as review("team-a", "ghcr.io")
		with data.settings.allowed_registries as ["ghcr.io"]
}

test_denies_other_registry if {
	some d in registries.deny with input as review("team-a", "evil.example.com:5000")
		with data.settings.allowed_registries as ["ghcr.io"]
	d.code == "REGISTRY_NOT_ALLOWED"
	contains(d.msg, "init container \"setup\"")
	contains(d.msg, "\"evil.example.com:5000\"")
}

test_missing_allow_list_allows_nothing if {
	count(registries.deny) == 1 with input as review("team-a", "ghcr.io")
		with data.settings as {}
}

test_ignores_invalid_references if {
	count(registries.deny) == 0 with input as review("team-a", null)
		with data.settings.allowed_registries as ["ghcr.io"]
}

test_skips_exempt_namespaces if {
	count(registries.deny) == 0 with input as review("kube-system", "evil.example.com")
		with data.settings.allowed_registries as ["ghcr.io"]
		with data.settings.exempt_namespaces as ["kube-system"]
}
