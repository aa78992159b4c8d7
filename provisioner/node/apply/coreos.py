"""`coreos:` -> the files and units coreos-cloudinit generates from it (system/{oem,update,flannel,env,etcd,
etcd2,fleet,locksmith}.go), byte for byte:

    coreos.oem        /etc/oem-release                       ID=..\\nVERSION_ID=..\\nNAME="..".. (only with an id)
    coreos.update     /etc/coreos/update.conf                REBOOT_STRATEGY/GROUP/SERVER lines replaced or added
                      + locksmithd.service restart (stop and mask for `off`), update-engine.service restart
    coreos.flannel    /run/flannel/options.env               FLANNELD_*=... lines, no final newline
    coreos.etcd       etcd.service.d/20-cloudinit.conf      [Service] + Environment="ETCD_...=..." per set field
    coreos.etcd2      etcd2.service.d/20-cloudinit.conf     (runtime units: under /run/systemd/system)
    coreos.fleet      fleet.service.d/20-cloudinit.conf
    coreos.locksmith  locksmithd.service.d/20-cloudinit.conf

etcd on this OS is Debian's etcd 3.4 (`etcd.service`); the image makes `etcd2.service` an alias of it,
and systemd reads an alias's drop-ins too, so the etcd2 drop-in configures Debian's unit under the name
the guides use (`command: start` on etcd2.service, `systemctl status etcd2`). etcd 3.4 serves the v2 API
(which the guides' `etcdctl set/get/cluster-health` speak) only with --enable-v2, so a config with an
etcd or etcd2 section also gets `10-enable-v2.conf` (ETCD_ENABLE_V2=true) next to 20-cloudinit.conf.
"""

from __future__ import annotations

from provisioner.cloudconfig.gosemantics import go_quote
from provisioner.cloudconfig.model import (
    OEM,
    CloudConfig,
    DropIn,
    RebootStrategy,
    ServiceEnvironment,
    Unit,
    Update,
)
from provisioner.node.apply.target import Target
from provisioner.node.systemd import UnitCommand

DROP_IN = "20-cloudinit.conf"
V2_DROP_IN = DropIn("10-enable-v2.conf", '[Service]\nEnvironment="ETCD_ENABLE_V2=true"\n')
UPDATE_CONF = "/etc/coreos/update.conf"
UPDATE_CONF_DEFAULT = "/usr/share/coreos/update.conf"


# ---------------------------------------------------------------------- files


def apply_oem(config: CloudConfig, target: Target) -> None:
    content = oem_release(config.coreos.oem)
    if content is not None:
        target.write_file("/etc/oem-release", content.encode())


def apply_update(config: CloudConfig, target: Target) -> None:
    settings = config.coreos.update.settings()
    if not settings:
        return
    base = target.read(UPDATE_CONF)
    if base is None:
        # coreos-cloudinit failed without /usr/share/coreos/update.conf (always there on CoreOS): start empty.
        base = target.read(UPDATE_CONF_DEFAULT) or b""
    target.write_file(UPDATE_CONF, update_conf(base.decode("utf-8", "replace"), config.coreos.update).encode())


def apply_flannel(config: CloudConfig, target: Target) -> None:
    content = "\n".join(f"{name}={value}" for name, value in config.coreos.flannel.variables)
    if content:
        target.write_file("/run/flannel/options.env", content.encode())


def oem_release(oem: OEM) -> str | None:
    """/etc/oem-release, or None when the OEM section has no id (pure)."""
    if not oem.id:
        return None
    return (f"ID={oem.id}\nVERSION_ID={oem.version_id}\nNAME={go_quote(oem.name)}\n"
            f"HOME_URL={go_quote(oem.home_url)}\nBUG_REPORT_URL={go_quote(oem.bug_report_url)}\n")


def update_conf(base: str, update: Update) -> str:
    """update.conf: lines starting with a set key are replaced in place, missing keys appended sorted (pure).

    As coreos-cloudinit: the match is a prefix match (`GROUPS=` counts as GROUP), and every line is
    ended with a newline."""
    pending = {key: f"{key}={value}" for key, value in update.settings().items()}
    lines = base.split("\n")
    if lines[-1] == "":
        lines.pop()  # Go's bufio.Scanner: a final newline ends the last line, it does not start another
    out = []
    for line in (line.removesuffix("\r") for line in lines):
        for key, replacement in pending.items():
            if line.startswith(key):
                line = replacement
                del pending[key]
                break
        out.append(line + "\n")
    out += [pending[key] + "\n" for key in sorted(pending)]
    return "".join(out)


# ---------------------------------------------------------------------- units


def service_contents(section: ServiceEnvironment) -> str:
    """A drop-in's `[Service]` with one `Environment="KEY=value"` per variable; "" for none (pure)."""
    if not section.variables:
        return ""
    return "[Service]\n" + "".join(f'Environment="{name}={value}"\n' for name, value in section.variables)


def generated_units(config: CloudConfig) -> list[Unit]:
    """The units coreos-cloudinit adds after coreos.units, in its order: etcd, etcd2, fleet, locksmith,
    update (pure). A section that is absent gives a unit with an empty drop-in, which writes nothing."""
    coreos = config.coreos
    units = []
    for name, section in (("etcd.service", coreos.etcd), ("etcd2.service", coreos.etcd2)):
        drop_ins = [DropIn(DROP_IN, service_contents(section))]
        if section.given:
            drop_ins.insert(0, V2_DROP_IN)
        units.append(Unit(name=name, runtime=True, drop_ins=tuple(drop_ins)))
    for name, section in (("fleet.service", coreos.fleet), ("locksmithd.service", coreos.locksmith)):
        units.append(Unit(name=name, runtime=True, drop_ins=(DropIn(DROP_IN, service_contents(section)),)))
    return units + update_units(coreos.update)


def update_units(update: Update) -> list[Unit]:
    """coreos-cloudinit's Update.Units(): locksmithd restarted (stopped and masked for `off`), update-engine
    restarted when a group or server is set (pure)."""
    units = []
    if update.reboot_strategy is not None:
        off = update.reboot_strategy is RebootStrategy.OFF
        units.append(Unit(name="locksmithd.service", runtime=True, mask=off,
                          command=UnitCommand.STOP if off else UnitCommand.RESTART))
    if update.group or update.server:
        units.append(Unit(name="update-engine.service", command=UnitCommand.RESTART))
    return units


def prepare_etcd_dirs(config: CloudConfig, target: Target) -> None:
    """Make the data/WAL directories an etcd section names, owned by the `etcd` user.

    Debian's etcd.service runs etcd as `etcd`, which cannot create a directory such as the guides'
    /var/lib/etcd2 itself (CoreOS's etcd2 unit had it made for it). Without an `etcd` user (a --root
    tree of another OS) nothing is done. Raises ApplyError."""
    if "etcd" not in target.accounts():
        return
    owner = target.owner_ids("etcd", "coreos.etcd2")
    for section in (config.coreos.etcd, config.coreos.etcd2):
        for name, value in section.variables:
            if name in ("ETCD_DATA_DIR", "ETCD_WAL_DIR") and value.startswith("/"):
                target.make_dir(value, 0o700, owner)


def uses_etcd_v2(config: CloudConfig) -> bool:
    """The config is from the etcd v2 era (an etcd or etcd2 section): shells default to ETCDCTL_API=2."""
    return config.coreos.etcd.given or config.coreos.etcd2.given
