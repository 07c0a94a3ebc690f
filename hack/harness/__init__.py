"""The real servers that the test suite and the sandbox both start: a control plane (kube-apiserver and etcd),
PostgreSQL and MariaDB servers, and a SeaweedFS object store, each on loopback with its own folder and ports."""
