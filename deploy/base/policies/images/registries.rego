# Images may only come from registries on the allow-list in data.settings.allowed_registries
# (settings/registries.yaml). A missing list allows nothing.
package verdict.images.registries

import data.verdict.lib

default allowed := []

allowed := data.settings.allowed_registries

deny contains {"code": "REGISTRY_NOT_ALLOWED", "msg": msg} if {
	not lib.exempt
	some image in input.images
	image.registry != null
	not image.registry in allowed
	msg := sprintf(
		"%s uses image %q from registry %q, which is not allowed (allowed: %s). Use an image from an allowed registry, or add the registry to data.settings.allowed_registries",
		[lib.describe(image), image.reference, image.registry, concat(", ", allowed)],
	)
}
