# Helpers shared by the shipped policies.
package verdict.lib

# The review's namespace is listed in data.settings.exempt_namespaces.
exempt if input.request.namespace in data.settings.exempt_namespaces

# Labels of the review's namespace, from data.inventory: synced from the cluster by
# `verdict serve`, or Namespace objects in inventory/ files (offline, `check` and `test`).
namespace_labels := data.inventory.cluster.v1.Namespace[input.request.namespace].metadata.labels

# `container "app"`, `init container "setup"`, `ephemeral container "debug"`.
describe(image) := sprintf("%s %q", [kind_names[image.kind], image.container])

kind_names := {"container": "container", "init": "init container", "ephemeral": "ephemeral container"}
