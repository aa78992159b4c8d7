"""OS updates through the A/B USR slots: the update agent (update_engine's job on CoreOS: read the channel's
signed manifest, verify the payload, write the passive slot, flip its boot bits, leave the marker
/run/update_engine_autoupdate_completed) and the cluster's reboot coordination (locksmithd, which watches
that marker). See docs/updates.md."""
