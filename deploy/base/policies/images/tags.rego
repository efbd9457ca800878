# Images must name a version: no tag (which means :latest) and :latest are refused,
# unless the reference pins a digest.
package verdict.images.tags

import data.verdict.lib

deny contains {"code": "IMAGE_TAG_LATEST", "msg": msg} if {
	not lib.exempt
	some image in input.images
	image.tag == "latest"
	not image.pinned
	msg := sprintf(
		"%s uses image %q, which has no tag or the tag :latest, so what runs can change without a deploy. Pin a version tag (%s/%s:1.2.3) or a digest (@sha256:...)",
		[lib.describe(image), image.reference, image.registry, image.repository],
	)
}
