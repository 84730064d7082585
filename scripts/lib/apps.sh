# scripts/lib/apps.sh: the interpreters of the example apps the upstream-mode tests run
# (e2e/app_test.go: examples/php under php-cli). Sourced by scripts/test.sh after
# scripts/lib/mariadb.sh (for _cohort_apt_install).

# cohort_ensure_app_runtimes: install php-cli with apt when php is missing (root only).
# Without it the PHP tests skip, or fail when CI is set.
cohort_ensure_app_runtimes() {
	if command -v php >/dev/null 2>&1; then
		return 0
	fi
	printf 'installing php-cli for the upstream-mode tests\n' >&2
	_cohort_apt_install php-cli
}
