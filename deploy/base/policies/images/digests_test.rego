package verdict.images.digests_test

import data.verdict.images.digests

labelled := {"prod": {"metadata": {"labels": {"verdict.dev/require-digest": "true"}}}, "dev": {"metadata": {"labels": {}}}}

review(ns, pinned) := {"request": {"namespace": ns}, "images": [{"kind": "container", "container": "app", "reference": "ghcr.io/a/b:1", "normalized": "ghcr.io/a/b:1", "registry": "ghcr.io", "pinned": pinned}]}

test_denies_unpinned_image_in_labelled_namespace if {
	some d in digests.deny with input as review("prod", false)
		with data.inventory.cluster.v1.Namespace as labelled
	d.code == "DIGEST_REQUIRED"
	contains(d.msg, "namespace \"prod\"")
}

test_admits_pinned_image_in_labelled_namespace if {
	count(digests.deny) == 0 with input as review("prod", true)
		with data.inventory.cluster.v1.Namespace as labelled
}

test_admits_unpinned_image_in_unlabelled_namespace if {
	count(digests.deny) == 0 with input as review("dev", false)
		with data.inventory.cluster.v1.Namespace as labelled
	count(digests.deny) == 0 with input as review("unknown", false)
		with data.inventory.cluster.v1.Namespace as labelled
}

test_skips_exempt_namespaces if {
	count(digests.deny) == 0 with input as review("prod", false)
		with data.inventory.cluster.v1.Namespace as labelled
		with data.settings.exempt_namespaces as ["prod"]
}
