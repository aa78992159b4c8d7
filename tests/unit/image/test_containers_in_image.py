"""The image's container runtime: Debian's docker.io, started on demand; core may run docker."""

from provisioner.image.recipe import load_recipe
from provisioner.image.tree import CORE_GROUPS, existing_groups


def test_docker_comes_from_debian_and_starts_on_demand():
    recipe = load_recipe()
    assert {"docker.io", "containerd", "runc", "apparmor"} <= set(recipe.packages)
    assert "docker.socket" in recipe.enable_units
    assert {"docker.service", "containerd.service"} <= set(recipe.disable_units)
    assert not {"docker.service", "containerd.service"} & set(recipe.enable_units)


def test_core_joins_only_groups_the_image_defines():
    group = "root:x:0:\nsudo:x:27:\ndocker:x:107:\n"
    assert existing_groups(group, CORE_GROUPS) == ["sudo", "docker"]
    assert existing_groups("root:x:0:\nsudo:x:27:\n", CORE_GROUPS) == ["sudo"]
