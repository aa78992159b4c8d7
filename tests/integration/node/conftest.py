from tests.fixtures.user_systemd import user_systemd  # noqa: F401  (a systemd --user "machine" per test)
