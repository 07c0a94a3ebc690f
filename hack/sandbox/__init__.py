"""The local sandbox: the whole operator on one machine without a cluster, everything on 127.0.0.1.

    python -m hack.sandbox run      # foreground; Ctrl-C stops everything      (make run)
    python -m hack.sandbox up       # background; returns once ready           (make dev-up)
    python -m hack.sandbox down     # stops what `up` started                  (make dev-down)
    python -m hack.sandbox status

One supervisor process starts, in order: the control plane of the test harness (etcd + kube-apiserver, the CRD),
a local PostgreSQL 15 with the sample databases, the real `dbb-webhook` over TLS registered with the API server,
the real reconciler with the sandbox's executor (`hack.sandbox.reconciler`: it runs `dbb-backup` itself, as no
kubelet runs here), and the sample objects. It stops them in the reverse order. `up` is that same supervisor
started in a session of its own; `run` is the supervisor in the foreground. Either way every process is recorded
in `<dev>/run/` (pid and start time), so `down` can stop what a supervisor killed with SIGKILL left behind.

State lives in one folder: `.dev/` in the repository, or `$DBB_DEV_DIR` (the tests use a temporary one).
"""
