"""Install, upgrade, uninstall, roles and privileges, connection errors."""
