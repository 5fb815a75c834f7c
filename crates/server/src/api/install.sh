#!/bin/sh
# noreboot: joins this Debian host to the fleet of @@SERVER_URL@@.
# Rendered by that noreboot-server (GET /install.sh):
#
#   curl -fsSL @@SERVER_URL@@/install.sh | sudo sh -s -- --key REGKEY [--tag T]...
#
# It checks this host (Debian, amd64, systemd) and the registration key
# with the server before it changes anything, then: adds the server's APT
# repository (its signing key, fingerprint @@REPO_FINGERPRINT@@, is in
# this script), installs the noreboot package, trusts the server's bundle
# signing keys, registers the host and starts the update timer. Run again,
# it changes nothing that is already done, and says so.
#
# Options:
#   --key KEY     registration key (noreboot-server admin key create)
#   --tag TAG     tag the host (repeatable)
#   --ca FILE     PEM CA certificate(s) of a server whose certificate comes
#                 from its own CA: trusted for this server by apt
#                 (/etc/apt/apt.conf.d/60noreboot-ca) and by the agent
#                 (/etc/noreboot/server-ca.pem). Fetch the script itself with
#                 curl --cacert FILE.
#   --server URL  the server's URL [default: @@SERVER_URL@@]
#
# Exit status: 0 done (or nothing to do), 1 failure, 2 usage, 3 not a host
# this script supports (nothing changed), 4 registration key refused
# (nothing changed).
set -eu

SERVER='@@SERVER_URL@@'
FINGERPRINT='@@REPO_FINGERPRINT@@'
KEYRING=/etc/apt/keyrings/noreboot.asc
SOURCES=/etc/apt/sources.list.d/noreboot.sources
APT_CA_CONF=/etc/apt/apt.conf.d/60noreboot-ca
AGENT_CA=/etc/noreboot/server-ca.pem
TRUSTED=/etc/noreboot/trusted.d
STATE=/var/lib/noreboot/server.json
CONFIG=/etc/noreboot/config.toml

say() { printf 'noreboot install: %s\n' "$*"; }
die() {
	code=$1
	shift
	printf 'noreboot install: error: %s\n' "$*" >&2
	exit "$code"
}

# All of it in a function, parsed whole before it runs: under
# `curl ... | sh -s`, the shell reads the script from stdin, and a command
# that read stdin would otherwise eat the rest of the script.
main() {
	KEY=''
	CA=''
	TAGS=''
	while [ $# -gt 0 ]; do
		case $1 in
		--key)
			[ $# -ge 2 ] || die 2 "--key needs a value"
			KEY=$2
			shift 2
			;;
		--tag)
			[ $# -ge 2 ] || die 2 "--tag needs a value"
			case $2 in
			'' | *'
'*) die 2 "--tag: a tag is one non-empty line" ;;
			esac
			TAGS="$TAGS$2
	"
			shift 2
			;;
		--ca)
			[ $# -ge 2 ] || die 2 "--ca needs a file"
			CA=$2
			shift 2
			;;
		--server)
			[ $# -ge 2 ] || die 2 "--server needs a URL"
			SERVER=${2%/}
			shift 2
			;;
		-h | --help)
			echo "usage: curl -fsSL $SERVER/install.sh | sudo sh -s -- --key KEY [--tag T]... [--ca FILE] [--server URL]"
			exit 0
			;;
		*) die 2 "unknown argument: $1 (usage: sh install.sh --key KEY [--tag T]... [--ca FILE] [--server URL])" ;;
		esac
	done

	# --- checks: nothing on the host changes before they all pass ----------

	[ -n "$KEY" ] || die 2 "--key KEY is required (a registration key: noreboot-server admin key create --feed FEED)"
	case $KEY in
	*[!A-Za-z0-9_-]*) die 4 "the registration key has characters no key has: check what was pasted" ;;
	esac
	case $SERVER in
	http://* | https://*) ;;
	*) die 2 "--server: $SERVER is not an http:// or https:// URL" ;;
	esac
	case $SERVER in
	*[!]A-Za-z0-9._~:/@%[-]*) die 2 "--server: $SERVER has characters a URL here may not have" ;;
	esac

	if [ ! -f /etc/debian_version ] || ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg >/dev/null 2>&1; then
		die 3 "this is not a Debian host (no /etc/debian_version, apt-get or dpkg): the noreboot package is for Debian 12 and its derivatives; nothing was changed"
	fi
	arch=$(dpkg --print-architecture)
	[ "$arch" = amd64 ] || die 3 "this host is $arch; the noreboot package is built for amd64 only; nothing was changed"
	command -v systemctl >/dev/null 2>&1 || die 3 "systemctl not found: the agent's update timer needs systemd; nothing was changed"
	[ "$(id -u)" = 0 ] || die 2 "run as root: curl -fsSL $SERVER/install.sh | sudo sh -s -- --key KEY"
	command -v curl >/dev/null 2>&1 || die 3 "curl not found (apt-get install curl)"
	if [ -n "$CA" ]; then
		[ -r "$CA" ] || die 2 "--ca: cannot read $CA"
		grep -q -- '-----BEGIN CERTIFICATE-----' "$CA" || die 2 "--ca: $CA is not a PEM certificate file"
	fi

	# Same server already? (server.json holds "url": "<server>".)
	registered=''
	if [ -f "$STATE" ]; then
		if grep -Fq "\"url\": \"$SERVER\"" "$STATE"; then
			registered=yes
		else
			die 1 "this host is registered with another server ($STATE): remove that file to move it here"
		fi
	fi

	# cURL with the server's CA when one is given.
	fetch() {
		if [ -n "$CA" ]; then
			curl --cacert "$CA" "$@"
		else
			curl "$@"
		fi
	}

	# The message of the server's JSON error body in file $1 (else the body).
	reason() {
		msg=$(sed -n 's/^{"error":"\(.*\)"}$/\1/p' "$1")
		if [ -n "$msg" ]; then echo "$msg"; else cat "$1"; fi
	}

	if [ -z "$registered" ]; then
		tmp=$(mktemp)
		trap 'rm -f "$tmp"' EXIT
		status=$(fetch -sS -o "$tmp" -w '%{http_code}' -X POST \
			-H 'Content-Type: application/json' \
			--data "{\"registration_key\":\"$KEY\"}" \
			"$SERVER/api/v1/register/check") || die 1 "cannot reach $SERVER (with --ca FILE if its certificate comes from its own CA); nothing was changed"
		case $status in
		200) ;;
		401 | 403) die 4 "the server refused the registration key: $(reason "$tmp"); nothing was changed" ;;
		429) die 1 "the server is rate-limiting this address: try again in a minute; nothing was changed" ;;
		*) die 1 "$SERVER answered $status to the key check: $(reason "$tmp"); nothing was changed" ;;
		esac
	fi

	# --- changes, each skipped when already done -----------------------------

	# Installs stdin as $1 (mode $2) unless it already has that content.
	# Prints whether it changed.
	put() {
		new=$(mktemp)
		cat >"$new"
		if [ -f "$1" ] && cmp -s "$new" "$1"; then
			rm -f "$new"
			return 1
		fi
		mkdir -p "$(dirname "$1")"
		chmod "$2" "$new"
		mv "$new" "$1"
		return 0
	}

	changed=''
	if put "$KEYRING" 0644 <<'NOREBOOT_KEY'; then
@@REPO_KEY@@
NOREBOOT_KEY
		say "added the repository key $FINGERPRINT ($KEYRING)"
		changed=yes
	else
		say "repository key present ($KEYRING)"
	fi

	if [ -n "$CA" ]; then
		if put "$AGENT_CA" 0644 <"$CA"; then
			say "added the server's CA ($AGENT_CA)"
			changed=yes
		fi
		host=${SERVER#*://}
		host=${host%%/*}
		host=${host##*@}
		case $host in
		\[*) host=${host%%]*}] ;;
		*) host=${host%%:*} ;;
		esac
		if printf 'Acquire::https::%s::CaInfo "%s";\n' "$host" "$AGENT_CA" | put "$APT_CA_CONF" 0644; then
			say "apt trusts that CA for $host ($APT_CA_CONF)"
			changed=yes
		fi
	fi

	if put "$SOURCES" 0644 <<EOF; then
# noreboot agent from its noreboot-server (added by $SERVER/install.sh)
# Repository key fingerprint: $FINGERPRINT
Types: deb
URIs: $SERVER/apt
Suites: stable
Components: main
Architectures: amd64
Signed-By: $KEYRING
EOF
		say "added the repository ($SOURCES)"
		changed=yes
	else
		say "repository present ($SOURCES)"
	fi

	installed=$(dpkg-query -W -f='${Status} ${Version}' noreboot 2>/dev/null || true)
	case $installed in
	'install ok installed '*)
		say "noreboot ${installed##* } already installed (upgrades come with apt upgrade)"
		;;
	*)
		# This repository alone: another source that fails must not stop it.
		apt-get update -o Dir::Etc::sourcelist="$SOURCES" -o Dir::Etc::sourceparts=- \
			-o APT::Get::List-Cleanup=0 </dev/null || die 1 "apt-get update of $SERVER/apt failed"
		DEBIAN_FRONTEND=noninteractive apt-get install -y noreboot </dev/null || die 1 "apt-get install noreboot failed"
		say "installed noreboot"
		changed=yes
		;;
	esac

	if [ -n "$CA" ] && [ -f "$CONFIG" ] && ! grep -q '^ca *=' "$CONFIG"; then
		if grep -q "^# ca = \"$AGENT_CA\"\$" "$CONFIG"; then
			sed -i "s|^# ca = \"$AGENT_CA\"\$|ca = \"$AGENT_CA\"|" "$CONFIG"
			say "the agent trusts the server's CA ($CONFIG: ca = \"$AGENT_CA\")"
			changed=yes
		else
			say "warning: set ca = \"$AGENT_CA\" in [server] of $CONFIG yourself"
		fi
	fi

	write_bundle_key() {
		if put "$TRUSTED/noreboot-server-$1.pub" 0644; then
			say "trusts bundle signing key $1"
			changed=yes
		fi
	}
@@BUNDLE_KEYS@@

	if [ -n "$registered" ]; then
		say "already registered with $SERVER"
	else
		set -f
		set -- register --server "$SERVER" --key "$KEY"
		old_ifs=$IFS
		IFS='
'
		for t in $TAGS; do
			set -- "$@" --tag "$t"
		done
		IFS=$old_ifs
		set +f
		noreboot "$@" </dev/null || die 1 "noreboot register failed (see above)"
		changed=yes
	fi

	if [ -d /run/systemd/system ]; then
		if systemctl is-enabled --quiet noreboot-update.timer && systemctl is-active --quiet noreboot-update.timer; then
			say "noreboot-update.timer already enabled and running"
		else
			systemctl enable --now noreboot-update.timer </dev/null
			say "started noreboot-update.timer"
			changed=yes
		fi
	else
		systemctl enable noreboot-update.timer >/dev/null 2>&1 || true
		say "systemd is not running: noreboot-update.timer starts at the next boot"
	fi

	if [ -n "$changed" ]; then
		say "done: this host is in the fleet of $SERVER"
	else
		say "nothing to do: this host was already in the fleet of $SERVER"
	fi
}

main "$@"
