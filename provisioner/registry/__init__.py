"""The container registry the provisioning server fronts: Debian's docker-registry (the Distribution
registry) as a child process, images imported into it with skopeo or built offline from busybox-static.

Storage lives under the data dir (`DATA_DIR/registry`, the registry's filesystem driver layout); every
node's dockerd uses the registry as its Docker Hub mirror (docs/containers.md).
"""
