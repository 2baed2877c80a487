# shellcheck shell=bash
# A private apt for Debian 13 (trixie) packages on a Debian 12 machine, sourced
# by provision-criu.sh and provision-engines.sh. It only downloads: packages are
# unpacked with `dpkg -x` into a private root, never installed, and the system's
# apt state is never read or written.
#
# The sourcing script sets APT_DIR (the private apt state), SUITE and KEYRING,
# and defines say and die.

# The Debian mirror this machine's apt already uses (for the main suite, not
# the security one); the private configuration names trixie at the same place.
system_mirror() {
	local uri
	uri=$(
		cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
			awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }'
		cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
			awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; break } }'
	)
	uri=$(grep -E '/debian/?$' <<<"$uri" | grep -v security | head -n1 || true)
	printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}

apt_setup() {
	local mirror
	mirror=${CRIU_AIO_DEBIAN_MIRROR:-$(system_mirror)}
	[[ -r $KEYRING ]] || die "$KEYRING is missing: install debian-archive-keyring"
	mkdir -p "$APT_DIR"/{etc/sources.list.d,etc/preferences.d,state/lists/partial,cache/archives/partial}
	: >"$APT_DIR/state/status"
	printf 'deb [signed-by=%s] %s %s main\n' "$KEYRING" "$mirror" "$SUITE" >"$APT_DIR/etc/sources.list"
	# Every Dir:: that could reach the system's apt state points into $APT_DIR;
	# the empty status file makes apt see an empty system (we only download).
	cat >"$APT_DIR/apt.conf" <<-EOF
		Dir::Etc::SourceList "$APT_DIR/etc/sources.list";
		Dir::Etc::SourceParts "$APT_DIR/etc/sources.list.d";
		Dir::Etc::Preferences "$APT_DIR/etc/preferences";
		Dir::Etc::PreferencesParts "$APT_DIR/etc/preferences.d";
		Dir::State "$APT_DIR/state";
		Dir::State::status "$APT_DIR/state/status";
		Dir::Cache "$APT_DIR/cache";
		APT::Architecture "amd64";
		APT::Architectures { "amd64"; };
		Acquire::Languages "none";
		APT::Sandbox::User "root";
	EOF
	say "apt: $SUITE from $mirror (private state in $APT_DIR)"
	APT_CONFIG=$APT_DIR/apt.conf apt-get -q -o Dpkg::Use-Pty=0 update >"$APT_DIR/update.log" 2>&1 ||
		die "apt-get update of $SUITE failed; see $APT_DIR/update.log"
}

papt() { APT_CONFIG=$APT_DIR/apt.conf "$@"; }

# lib_closure PKG...: PKG plus, recursively, every library package it depends on
# (lib*, and gcc-N-base which libgcc-s1 needs). One apt-cache call per level.
lib_closure() {
	local -A seen=()
	local level=("$@") next p d
	while ((${#level[@]})); do
		next=()
		for p in "${level[@]}"; do seen[$p]=1; done
		while read -r d; do
			case $d in lib* | gcc-*-base) [[ -n ${seen[$d]:-} ]] || next+=("$d") ;; esac
		done < <(papt apt-cache depends --no-recommends --no-suggests --no-conflicts \
			--no-breaks --no-replaces --no-enhances "${level[@]}" |
			awk '/^ *\|?(Pre)?Depends:/ && $2 !~ /^</ { print $2 }' | sort -u)
		level=()
		((${#next[@]})) && mapfile -t level < <(printf '%s\n' "${next[@]}" | sort -u)
	done
	printf '%s\n' "${!seen[@]}" | sort
}

# fetch_unpack DEST PKG...: download PKG... from the private suite and dpkg -x
# each into DEST/root.
fetch_unpack() {
	local dest=$1 deb
	shift
	mkdir -p "$dest/debs" "$dest/root"
	(cd "$dest/debs" && papt apt-get -q -o Dpkg::Use-Pty=0 download "$@") >"$dest/download.log" 2>&1 ||
		die "apt-get download failed; see $dest/download.log"
	for deb in "$dest"/debs/*.deb; do
		dpkg -x "$deb" "$dest/root"
		# shellcheck disable=SC2016 # dpkg-deb expands ${Package}, not the shell
		dpkg-deb -W --showformat='${Package} ${Version}\n' "$deb" >>"$dest/PACKAGES"
	done
	rm -rf "$dest/debs"
}
