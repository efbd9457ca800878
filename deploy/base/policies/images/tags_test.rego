package verdict.images.tags_test

import data.verdict.images.tags

image(ref, tag, pinned) := {"kind": "container", "container": "app", "reference": ref, "registry": "docker.io", "repository": "library/nginx", "tag": tag, "pinned": pinned}

review(ns, images) := {"request": {"namespace": ns}, "images": images}

test_denies_image_without_tag if {
	some d in tags.deny with input as review("team-a", [image("nginx", "latest", false)])
	d.code == "IMAGE_TAG_LATEST"
	contains(d.msg, "container \"app\" uses image \"nginx\"")
}

test_denies_latest_tag if {
	count(tags.deny) == 1 with input as review("team-a", [image("nginx:latest", "latest", false)])
}

test_admits_version_tag if {
	count(tags.deny) == 0 with input as review("team-a", [image("nginx:1.27", "1.27", false)])
}

test_admits_latest_pinned_by_digest if {
	count(tags.deny) == 0 with input as review("team-a", [image("nginx:latest@sha256:abc", "latest", true)])
}

test_skips_exempt_namespaces if {
	count(tags.deny) == 0 with input as review("kube-system", [image("nginx", "latest", false)])
		with data.settings.exempt_namespaces as ["kube-system"]
}
