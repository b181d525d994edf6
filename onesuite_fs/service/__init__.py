"""Running onesuite-fs as a system service: systemd readiness, logs for journald or
logrotate, the mount(8) helper behind /etc/fstab lines, and installing the units."""
