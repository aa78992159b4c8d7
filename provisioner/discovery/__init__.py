"""etcd discovery service (v2 keys protocol subset), so clusters form with no internet."""
