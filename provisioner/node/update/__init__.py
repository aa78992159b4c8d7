"""OS updates through the A/B USR slots (update_engine's job on CoreOS): read the channel's signed
manifest, verify the payload, write the passive slot, flip its boot bits, leave the reboot to
locksmithd (the marker /run/update_engine_autoupdate_completed). See docs/image.md "Updates"."""
