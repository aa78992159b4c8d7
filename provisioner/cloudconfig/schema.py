"""The cloud-config schema of coreos-cloudinit v1.13.0 (config/*.go), as data.

Field order follows the Go structs (it decides the order of generated drop-in lines). `valid` is the
Go `valid:` regexp (matched unanchored, like regexp.MatchString), `deprecated` the `deprecated:` tag,
`env` the environment variable the node runtime maps the key to.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Type:
    kind: str  # string | bool | int | float64 | struct | slice
    fields: dict = field(default_factory=dict)  # struct: name -> Field
    elem: Type | None = None  # slice: element type

    @property
    def human(self) -> str:
        """Go's HumanType(): 'string', 'struct', '[]string', '[]struct'."""
        if self.kind == "slice":
            return "[]" + self.element.human
        return self.kind

    @property
    def element(self) -> Type:
        """A slice's element type (every slice in the schema has one)."""
        if self.elem is None:
            raise TypeError(f"{self.kind} has no element type")
        return self.elem


@dataclass(frozen=True)
class Field:
    type: Type
    valid: str | None = None
    deprecated: str | None = None
    env: str | None = None


STRING, BOOL, INT, FLOAT = Type("string"), Type("bool"), Type("int"), Type("float64")


def struct(**fields: Field) -> Type:
    return Type("struct", fields=fields)


def slice_of(elem: Type) -> Type:
    return Type("slice", elem=elem)


def f(type_: Type, env: str | None = None, *, valid: str | None = None, deprecated: str | None = None) -> Field:
    return Field(type_, valid=valid, deprecated=deprecated, env=env)


_ETCD2_ONLY = "etcd2 options no longer work for etcd"

ETCD = struct(
    addr=f(STRING, "ETCD_ADDR"),
    advertise_client_urls=f(STRING, "ETCD_ADVERTISE_CLIENT_URLS", deprecated=_ETCD2_ONLY),
    bind_addr=f(STRING, "ETCD_BIND_ADDR"),
    ca_file=f(STRING, "ETCD_CA_FILE"),
    cert_file=f(STRING, "ETCD_CERT_FILE"),
    cluster_active_size=f(INT, "ETCD_CLUSTER_ACTIVE_SIZE"),
    cluster_remove_delay=f(FLOAT, "ETCD_CLUSTER_REMOVE_DELAY"),
    cluster_sync_interval=f(FLOAT, "ETCD_CLUSTER_SYNC_INTERVAL"),
    cors=f(STRING, "ETCD_CORS"),
    data_dir=f(STRING, "ETCD_DATA_DIR"),
    discovery=f(STRING, "ETCD_DISCOVERY"),
    discovery_fallback=f(STRING, "ETCD_DISCOVERY_FALLBACK", deprecated=_ETCD2_ONLY),
    discovery_srv=f(STRING, "ETCD_DISCOVERY_SRV", deprecated=_ETCD2_ONLY),
    discovery_proxy=f(STRING, "ETCD_DISCOVERY_PROXY", deprecated=_ETCD2_ONLY),
    election_timeout=f(INT, "ETCD_ELECTION_TIMEOUT", deprecated=_ETCD2_ONLY),
    force_new_cluster=f(BOOL, "ETCD_FORCE_NEW_CLUSTER", deprecated=_ETCD2_ONLY),
    graphite_host=f(STRING, "ETCD_GRAPHITE_HOST"),
    heartbeat_interval=f(INT, "ETCD_HEARTBEAT_INTERVAL", deprecated=_ETCD2_ONLY),
    http_read_timeout=f(FLOAT, "ETCD_HTTP_READ_TIMEOUT"),
    http_write_timeout=f(FLOAT, "ETCD_HTTP_WRITE_TIMEOUT"),
    initial_advertise_peer_urls=f(STRING, "ETCD_INITIAL_ADVERTISE_PEER_URLS", deprecated=_ETCD2_ONLY),
    initial_cluster=f(STRING, "ETCD_INITIAL_CLUSTER", deprecated=_ETCD2_ONLY),
    initial_cluster_state=f(STRING, "ETCD_INITIAL_CLUSTER_STATE", deprecated=_ETCD2_ONLY),
    initial_cluster_token=f(STRING, "ETCD_INITIAL_CLUSTER_TOKEN", deprecated=_ETCD2_ONLY),
    key_file=f(STRING, "ETCD_KEY_FILE"),
    listen_client_urls=f(STRING, "ETCD_LISTEN_CLIENT_URLS", deprecated=_ETCD2_ONLY),
    listen_peer_urls=f(STRING, "ETCD_LISTEN_PEER_URLS", deprecated=_ETCD2_ONLY),
    max_result_buffer=f(INT, "ETCD_MAX_RESULT_BUFFER"),
    max_retry_attempts=f(INT, "ETCD_MAX_RETRY_ATTEMPTS"),
    max_snapshots=f(INT, "ETCD_MAX_SNAPSHOTS", deprecated=_ETCD2_ONLY),
    max_wals=f(INT, "ETCD_MAX_WALS", deprecated=_ETCD2_ONLY),
    name=f(STRING, "ETCD_NAME"),
    peer_addr=f(STRING, "ETCD_PEER_ADDR"),
    peer_bind_addr=f(STRING, "ETCD_PEER_BIND_ADDR"),
    peer_ca_file=f(STRING, "ETCD_PEER_CA_FILE"),
    peer_cert_file=f(STRING, "ETCD_PEER_CERT_FILE"),
    peer_election_timeout=f(INT, "ETCD_PEER_ELECTION_TIMEOUT"),
    peer_heartbeat_interval=f(INT, "ETCD_PEER_HEARTBEAT_INTERVAL"),
    peer_key_file=f(STRING, "ETCD_PEER_KEY_FILE"),
    peers=f(STRING, "ETCD_PEERS"),
    peers_file=f(STRING, "ETCD_PEERS_FILE"),
    proxy=f(STRING, "ETCD_PROXY", deprecated=_ETCD2_ONLY),
    retry_interval=f(FLOAT, "ETCD_RETRY_INTERVAL"),
    snapshot=f(BOOL, "ETCD_SNAPSHOT"),
    snapshot_count=f(INT, "ETCD_SNAPSHOTCOUNT"),  # sic: no underscore in etcd 0.4's variable
    trace=f(STRING, "ETCD_TRACE"),
    verbose=f(BOOL, "ETCD_VERBOSE"),
    very_verbose=f(BOOL, "ETCD_VERY_VERBOSE"),
    very_very_verbose=f(BOOL, "ETCD_VERY_VERY_VERBOSE"),
)

ETCD2 = struct(
    advertise_client_urls=f(STRING, "ETCD_ADVERTISE_CLIENT_URLS"),
    ca_file=f(STRING, "ETCD_CA_FILE", deprecated="ca_file obsoleted by trusted_ca_file and client_cert_auth"),
    cert_file=f(STRING, "ETCD_CERT_FILE"),
    client_cert_auth=f(BOOL, "ETCD_CLIENT_CERT_AUTH"),
    cors=f(STRING, "ETCD_CORS"),
    data_dir=f(STRING, "ETCD_DATA_DIR"),
    debug=f(BOOL, "ETCD_DEBUG"),
    discovery=f(STRING, "ETCD_DISCOVERY"),
    discovery_fallback=f(STRING, "ETCD_DISCOVERY_FALLBACK"),
    discovery_srv=f(STRING, "ETCD_DISCOVERY_SRV"),
    discovery_proxy=f(STRING, "ETCD_DISCOVERY_PROXY"),
    election_timeout=f(INT, "ETCD_ELECTION_TIMEOUT"),
    enable_pprof=f(BOOL, "ETCD_ENABLE_PPROF"),
    force_new_cluster=f(BOOL, "ETCD_FORCE_NEW_CLUSTER"),
    heartbeat_interval=f(INT, "ETCD_HEARTBEAT_INTERVAL"),
    initial_advertise_peer_urls=f(STRING, "ETCD_INITIAL_ADVERTISE_PEER_URLS"),
    initial_cluster=f(STRING, "ETCD_INITIAL_CLUSTER"),
    initial_cluster_state=f(STRING, "ETCD_INITIAL_CLUSTER_STATE"),
    initial_cluster_token=f(STRING, "ETCD_INITIAL_CLUSTER_TOKEN"),
    key_file=f(STRING, "ETCD_KEY_FILE"),
    listen_client_urls=f(STRING, "ETCD_LISTEN_CLIENT_URLS"),
    listen_peer_urls=f(STRING, "ETCD_LISTEN_PEER_URLS"),
    log_package_levels=f(STRING, "ETCD_LOG_PACKAGE_LEVELS"),
    max_snapshots=f(INT, "ETCD_MAX_SNAPSHOTS"),
    max_wals=f(INT, "ETCD_MAX_WALS"),
    name=f(STRING, "ETCD_NAME"),
    peer_ca_file=f(
        STRING, "ETCD_PEER_CA_FILE",
        deprecated="peer_ca_file obsoleted peer_trusted_ca_file and peer_client_cert_auth",
    ),
    peer_cert_file=f(STRING, "ETCD_PEER_CERT_FILE"),
    peer_key_file=f(STRING, "ETCD_PEER_KEY_FILE"),
    peer_client_cert_auth=f(BOOL, "ETCD_PEER_CLIENT_CERT_AUTH"),
    peer_trusted_ca_file=f(STRING, "ETCD_PEER_TRUSTED_CA_FILE"),
    proxy=f(STRING, "ETCD_PROXY", valid=r"^(on|off|readonly)$"),
    proxy_dial_timeout=f(INT, "ETCD_PROXY_DIAL_TIMEOUT"),
    proxy_failure_wait=f(INT, "ETCD_PROXY_FAILURE_WAIT"),
    proxy_read_timeout=f(INT, "ETCD_PROXY_READ_TIMEOUT"),
    proxy_refresh_interval=f(INT, "ETCD_PROXY_REFRESH_INTERVAL"),
    proxy_write_timeout=f(INT, "ETCD_PROXY_WRITE_TIMEOUT"),
    snapshot_count=f(INT, "ETCD_SNAPSHOT_COUNT"),
    strict_reconfig_check=f(BOOL, "ETCD_STRICT_RECONFIG_CHECK"),
    trusted_ca_file=f(STRING, "ETCD_TRUSTED_CA_FILE"),
    wal_dir=f(STRING, "ETCD_WAL_DIR"),
)

FLANNEL = struct(
    etcd_endpoints=f(STRING, "FLANNELD_ETCD_ENDPOINTS"),
    etcd_cafile=f(STRING, "FLANNELD_ETCD_CAFILE"),
    etcd_certfile=f(STRING, "FLANNELD_ETCD_CERTFILE"),
    etcd_keyfile=f(STRING, "FLANNELD_ETCD_KEYFILE"),
    etcd_prefix=f(STRING, "FLANNELD_ETCD_PREFIX"),
    etcd_username=f(STRING, "FLANNELD_ETCD_USERNAME"),
    etcd_password=f(STRING, "FLANNELD_ETCD_PASSWORD"),
    ip_masq=f(STRING, "FLANNELD_IP_MASQ"),
    subnet_file=f(STRING, "FLANNELD_SUBNET_FILE"),
    interface=f(STRING, "FLANNELD_IFACE"),
    public_ip=f(STRING, "FLANNELD_PUBLIC_IP"),
)

FLEET = struct(
    agent_ttl=f(STRING, "FLEET_AGENT_TTL"),
    authorized_keys_file=f(STRING, "FLEET_AUTHORIZED_KEYS_FILE"),
    disable_engine=f(BOOL, "FLEET_DISABLE_ENGINE"),
    engine_reconcile_interval=f(FLOAT, "FLEET_ENGINE_RECONCILE_INTERVAL"),
    etcd_cafile=f(STRING, "FLEET_ETCD_CAFILE"),
    etcd_certfile=f(STRING, "FLEET_ETCD_CERTFILE"),
    etcd_keyfile=f(STRING, "FLEET_ETCD_KEYFILE"),
    etcd_key_prefix=f(STRING, "FLEET_ETCD_KEY_PREFIX"),
    etcd_request_timeout=f(FLOAT, "FLEET_ETCD_REQUEST_TIMEOUT"),
    etcd_servers=f(STRING, "FLEET_ETCD_SERVERS"),
    etcd_username=f(STRING, "FLEET_ETCD_USERNAME"),
    etcd_password=f(STRING, "FLEET_ETCD_PASSWORD"),
    metadata=f(STRING, "FLEET_METADATA"),
    public_ip=f(STRING, "FLEET_PUBLIC_IP"),
    token_limit=f(INT, "FLEET_TOKEN_LIMIT"),
    verbosity=f(INT, "FLEET_VERBOSITY"),
    verify_units=f(BOOL, "FLEET_VERIFY_UNITS"),
)

LOCKSMITH = struct(
    endpoint=f(STRING, "LOCKSMITHD_ENDPOINT"),
    etcd_cafile=f(STRING, "LOCKSMITHD_ETCD_CAFILE"),
    etcd_certfile=f(STRING, "LOCKSMITHD_ETCD_CERTFILE"),
    etcd_keyfile=f(STRING, "LOCKSMITHD_ETCD_KEYFILE"),
    etcd_username=f(STRING, "LOCKSMITHD_ETCD_USERNAME"),
    etcd_password=f(STRING, "LOCKSMITHD_ETCD_PASSWORD"),
    group=f(STRING, "LOCKSMITHD_GROUP"),
    window_start=f(
        STRING, "REBOOT_WINDOW_START",
        valid=r"^((?i:sun|mon|tue|wed|thu|fri|sat|sun) )?0*([0-9]|1[0-9]|2[0-3]):0*([0-9]|[1-5][0-9])$",
    ),
    window_length=f(STRING, "REBOOT_WINDOW_LENGTH", valid=r"^[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+$"),
)

OEM = struct(
    id=f(STRING), name=f(STRING), version_id=f(STRING), home_url=f(STRING), bug_report_url=f(STRING),
)

UPDATE = struct(
    reboot_strategy=f(STRING, "REBOOT_STRATEGY", valid=r"^(best-effort|etcd-lock|reboot|off)$"),
    group=f(STRING, "GROUP"),
    server=f(STRING, "SERVER"),
)

UNIT_DROP_IN = struct(name=f(STRING), content=f(STRING))

UNIT = struct(
    name=f(STRING),
    mask=f(BOOL),
    enable=f(BOOL),
    runtime=f(BOOL),
    content=f(STRING),
    command=f(STRING, valid=r"^(start|stop|restart|reload|try-restart|reload-or-restart|reload-or-try-restart)$"),
    drop_ins=f(slice_of(UNIT_DROP_IN)),
)

COREOS = struct(
    etcd=f(ETCD),
    etcd2=f(ETCD2),
    flannel=f(FLANNEL),
    fleet=f(FLEET),
    locksmith=f(LOCKSMITH),
    oem=f(OEM),
    update=f(UPDATE),
    units=f(slice_of(UNIT)),
)

FILE = struct(
    encoding=f(STRING, valid=r"^(base64|b64|gz|gzip|gz\+base64|gzip\+base64|gz\+b64|gzip\+b64)$"),
    content=f(STRING),
    owner=f(STRING),
    path=f(STRING),
    permissions=f(STRING, valid=r"^0?[0-7]{3,4}$"),
)

_REMOTE_IMPORT = "trying to fetch from a remote endpoint introduces too many intermittent errors"

USER = struct(
    name=f(STRING),
    passwd=f(STRING),
    ssh_authorized_keys=f(slice_of(STRING)),
    coreos_ssh_import_github=f(STRING, deprecated=_REMOTE_IMPORT),
    coreos_ssh_import_github_users=f(slice_of(STRING), deprecated=_REMOTE_IMPORT),
    coreos_ssh_import_url=f(STRING, deprecated=_REMOTE_IMPORT),
    gecos=f(STRING),
    homedir=f(STRING),
    no_create_home=f(BOOL),
    primary_group=f(STRING),
    groups=f(slice_of(STRING)),
    no_user_group=f(BOOL),
    system=f(BOOL),
    no_log_init=f(BOOL),
    shell=f(STRING),
)

CLOUD_CONFIG = struct(
    ssh_authorized_keys=f(slice_of(STRING)),
    coreos=f(COREOS),
    write_files=f(slice_of(FILE)),
    hostname=f(STRING),
    users=f(slice_of(USER)),
    manage_etc_hosts=f(STRING),
)
