"""The disk installer (`provisioner install`, or `python3 installer.pyz`): a faster, safer
flatcar-install. Standard library only, Python 3.9 compatible: it also runs as a zipapp on
rescue systems (zipapp.py). Entry point: provisioner.install.cli.main."""
