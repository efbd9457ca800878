# In namespaces labelled verdict.dev/require-digest=true, every image must be pinned
# by digest. Labels come from data.inventory (the synced Namespaces).
package verdict.images.digests

import data.verdict.lib

label := "verdict.dev/require-digest"

deny contains {"code": "DIGEST_REQUIRED", "msg": msg} if {
	not lib.exempt
	lib.namespace_labels[label] == "true"
	some image in input.images
	image.registry != null
	not image.pinned
	msg := sprintf(
		"%s uses image %q without a digest, but namespace %q is labelled %s=true. Pin the image by digest (%s@sha256:...), e.g. with `crane digest %s`",
		[lib.describe(image), image.reference, input.request.namespace, label, image.reference, image.normalized],
	)
}
