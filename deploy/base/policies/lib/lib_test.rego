package verdict.lib_test

import data.verdict.lib

test_listed_namespace_is_exempt if {
	lib.exempt with input as {"request": {"namespace": "kube-system"}}
		with data.settings.exempt_namespaces as ["kube-system"]
}

test_other_namespace_is_not_exempt if {
	not lib.exempt with input as {"request": {"namespace": "team-a"}}
		with data.settings.exempt_namespaces as ["kube-system"]
}

test_describes_each_container_kind if {
	lib.describe({"kind": "init", "container": "setup"}) == "init container \"setup\""
	lib.describe({"kind": "ephemeral", "container": "dbg"}) == "ephemeral container \"dbg\""
}

test_reads_namespace_labels_from_inventory if {
	labels := lib.namespace_labels with input as {"request": {"namespace": "prod"}}
		with data.inventory.cluster.v1.Namespace.prod.metadata.labels as {"a": "b"}
	labels == {"a": "b"}
}
