"""OS updates through the A/B USR slots: the update agent and the cluster's reboot coordination."""
