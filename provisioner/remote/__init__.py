"""Remote hosts over SSH: sessions and host keys (paramiko), rescue-system installs."""
