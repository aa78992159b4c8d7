"""The node's cloud-config applier (coreos-cloudinit for this OS): a runner and one module per top-level key.

    runner.py        sources -> validate -> substitute -> parse -> modules, in coreos-cloudinit's order
    sources.py       kernel command line, install/OEM files, URLs (retried with backoff)
    addresses.py     $private_ipv4 & co. from the node (and the server's /metadata)
    target.py        the root, systemd, atomic writes, what changed (--root, --dry-run)
    hostname.py, users.py, ssh_authorized_keys.py, write_files.py, manage_etc_hosts.py,
    coreos.py (oem, update, flannel files; generated drop-ins), units.py, environment.py
    status.py        /run/provisioner/cloudinit.json, exit codes
    ignition.py      the keys and hostname of an OEM config.ign
"""
