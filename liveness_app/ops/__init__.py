"""Operations helpers: start-up checks (health), asset checksums, systemd notification, log files."""
