#!/bin/sh
# entrypoint of the local MariaDB image (see e2e/mariadb-image.sh): a stand-in for the
# mysql:8 image when no registry is reachable. It honours the same environment:
#   MYSQL_ROOT_PASSWORD[_FILE]  root password (required, or MYSQL_ALLOW_EMPTY_PASSWORD=yes)
#   MYSQL_DATABASE              database created at first start
#   MYSQL_USER, MYSQL_PASSWORD[_FILE]  user with ALL on MYSQL_DATABASE, from any host
# Data lives in /var/lib/mysql; the first start initialises it, later starts reuse it.
set -eu

datadir=/var/lib/mysql
sqlq() { printf '%s' "$1" | sed "s/\\\\/\\\\\\\\/g; s/'/\\\\'/g"; } # escape for a '...' literal

fromfile() { # fromfile VAR: VAR_FILE overrides VAR
	eval "f=\${${1}_FILE:-}"
	if [ -n "$f" ]; then
		eval "$1=\$(cat \"\$f\")"
	fi
}
fromfile MYSQL_ROOT_PASSWORD
fromfile MYSQL_PASSWORD

common="--no-defaults --user=mysql --datadir=$datadir --basedir=/usr --lc-messages-dir=/usr/share/mysql
 --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci --skip-name-resolve
 --tmpdir=/tmp"

mkdir -p "$datadir" /run/mysqld
chown mysql:mysql "$datadir" /run/mysqld

if [ ! -d "$datadir/mysql" ]; then
	if [ -z "${MYSQL_ROOT_PASSWORD:-}" ] && [ "${MYSQL_ALLOW_EMPTY_PASSWORD:-}" != yes ]; then
		echo "entrypoint: set MYSQL_ROOT_PASSWORD (or MYSQL_ALLOW_EMPTY_PASSWORD=yes)" >&2
		exit 1
	fi
	echo "entrypoint: initialising $datadir" >&2
	init=/tmp/init.sql
	{
		echo "CREATE DATABASE IF NOT EXISTS mysql;"
		echo "USE mysql;"
		echo "SET @auth_root_socket=NULL;"
		cat /usr/share/mysql/mysql_system_tables.sql \
			/usr/share/mysql/mysql_performance_tables.sql \
			/usr/share/mysql/mysql_system_tables_data.sql
		echo "DELETE FROM mysql.global_priv WHERE User='';"
		echo "DELETE FROM mysql.global_priv WHERE User='root' AND Host NOT IN ('localhost');"
		echo "FLUSH PRIVILEGES;"
		if [ -n "${MYSQL_ROOT_PASSWORD:-}" ]; then
			echo "ALTER USER 'root'@'localhost' IDENTIFIED BY '$(sqlq "$MYSQL_ROOT_PASSWORD")';"
			echo "CREATE USER 'root'@'%' IDENTIFIED BY '$(sqlq "$MYSQL_ROOT_PASSWORD")';"
			echo "GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
		fi
		if [ -n "${MYSQL_DATABASE:-}" ]; then
			echo "CREATE DATABASE IF NOT EXISTS \`$MYSQL_DATABASE\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;"
		fi
		if [ -n "${MYSQL_USER:-}" ]; then
			echo "CREATE USER '$(sqlq "$MYSQL_USER")'@'%' IDENTIFIED BY '$(sqlq "${MYSQL_PASSWORD:-}")';"
			if [ -n "${MYSQL_DATABASE:-}" ]; then
				echo "GRANT ALL ON \`$MYSQL_DATABASE\`.* TO '$(sqlq "$MYSQL_USER")'@'%';"
			fi
		fi
		echo "FLUSH PRIVILEGES;"
	} >"$init"
	# shellcheck disable=SC2086
	if ! mariadbd $common --bootstrap --skip-networking <"$init" >/tmp/bootstrap.log 2>&1; then
		cat /tmp/bootstrap.log >&2
		rm -f "$init"
		exit 1
	fi
	rm -f "$init"
	echo "entrypoint: initialised" >&2
fi

# shellcheck disable=SC2086
exec mariadbd $common --bind-address=0.0.0.0 --port=3306 --socket=/run/mysqld/mysqld.sock \
	--max-connections=500 "$@"
