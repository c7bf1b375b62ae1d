#!/usr/bin/env bash
# Host-side status of an Asterisk + SIPSTACK connector installation, in one command.
#
#   deploy/status.sh [AMI_USERNAME]
#
# Checks the Asterisk binary, process and version, the AMI port, manager.conf (AMI enabled, its TLS
# against AMI_TLS, the user and its read classes), cdr_manager.conf, `cdr show status` (logging, the
# cdr_manager backend, batch mode), Docker and the connector container, and the connector's /healthz.
# Every check runs even when an earlier one fails; each failure prints its fix. Exit code 0 only when no
# check failed (warnings do not fail). Run it as root on the Asterisk host: the Asterisk console and
# /etc/asterisk usually need it. On a FreePBX host (fwconsole found) the fixes name the *_custom.conf
# files FreePBX includes and never overwrites, instead of the files it generates.
#
# Settings (environment variables; AMI_*, MONITORING_* are also read from the connector's .env):
#   AMI_USERNAME          the manager.conf user the connector logs in as (or the first argument)
#   AMI_HOST, AMI_PORT    where the connector reaches AMI (default 127.0.0.1, 5038)
#   AMI_TLS               true when the connector speaks TLS to AMI (manager.conf tlsenable, tlsbindaddr,
#                         port 5039 by default); default false, which is plain TCP
#   MONITORING_HOST/PORT  the connector's monitoring endpoint (default 0.0.0.0 -> 127.0.0.1, 8000)
#   CONNECTOR_ENV_FILE    the connector's env file (default: .env next to this script)
#   ASTERISK_BIN          the asterisk command (default: asterisk)
#   ASTERISK_CONFIG_DIR   Asterisk's configuration folder (default: /etc/asterisk)
#   CONNECTOR_CONTAINER   the container name (default: sipstack-connector; empty: skip the Docker checks)
#   CONNECTOR_HEALTH_URL  overrides the /healthz URL built from MONITORING_HOST and MONITORING_PORT
#   STATUS_TIMEOUT        seconds allowed to each command and HTTP request (default: 5)
#   NO_COLOR              set to anything to disable colours (they are only used on a terminal)

set -u

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ENV_FILE=${CONNECTOR_ENV_FILE:-$SCRIPT_DIR/.env}
ASTERISK=${ASTERISK_BIN:-asterisk}
CONF_DIR=${ASTERISK_CONFIG_DIR:-/etc/asterisk}
CONTAINER=${CONNECTOR_CONTAINER-sipstack-connector}
FREEPBX='' # fwconsole's path on a FreePBX host (detect_freepbx)
TIMEOUT=${STATUS_TIMEOUT:-5}
PASSED=0
FAILED=0
WARNED=0

if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then
    GREEN=$'\033[32m' RED=$'\033[31m' YELLOW=$'\033[33m' BOLD=$'\033[1m' RESET=$'\033[0m'
else
    GREEN='' RED='' YELLOW='' BOLD='' RESET=''
fi

usage() {
    sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

# ---- output -----------------------------------------------------------------------------------

fixes() {
    local fix
    for fix in "$@"; do
        printf '    fix: %s\n' "$fix"
    done
}

pass() {
    PASSED=$((PASSED + 1))
    printf '%s✓%s %s\n' "$GREEN" "$RESET" "$1"
}

fail() {
    FAILED=$((FAILED + 1))
    printf '%s✗%s %s\n' "$RED" "$RESET" "$1"
    shift
    fixes "$@"
}

warn() {
    WARNED=$((WARNED + 1))
    printf '%s!%s %s\n' "$YELLOW" "$RESET" "$1"
    shift
    fixes "$@"
}

# A line that is not a check (not counted in the summary).
note() {
    printf '%si%s %s\n' "$BOLD" "$RESET" "$1"
}

# ---- helpers ----------------------------------------------------------------------------------

# The value of a connector setting: the environment first, then the env file, then the default.
# The env file is read, never sourced: it is data, not a script.
setting() {
    local name=$1 default=$2 value
    value=${!name:-}
    if [ -z "$value" ] && [ -r "$ENV_FILE" ]; then
        value=$(sed -n "s/^[[:space:]]*${name}[[:space:]]*=[[:space:]]*//p" "$ENV_FILE" | tail -n 1)
        value=${value%$'\r'}
        value=${value#[\"\']}
        value=${value%[\"\']}
    fi
    printf '%s' "${value:-$default}"
}

# Run a command with a time limit when `timeout` exists (an unresponsive console must not hang us).
limited() {
    if command -v timeout >/dev/null 2>&1; then
        timeout "$TIMEOUT" "$@"
    else
        "$@"
    fi
}

rx() {
    limited "$ASTERISK" -rx "$1" 2>&1
}

first_line() {
    printf '%s\n' "$1" | sed -n '/[^[:space:]]/{s/^[[:space:]]*//;p;q;}'
}

# An Asterisk config with its #include/#tryinclude targets read in place, as Asterisk does: an included
# file continues the section it is included in (FreePBX includes manager_general_*.conf in [general]).
conf_text() {
    local file=$1 depth=${2:-0} line target pattern included
    local directive='^[[:space:]]*#(try)?include[[:space:]]*["<]?([^">]*)'
    [ "$depth" -le 8 ] || return 0 # an include loop
    while IFS= read -r line || [ -n "$line" ]; do
        if [[ $line =~ $directive ]]; then
            target=${BASH_REMATCH[2]%%[[:space:]]*}
            case $target in
                '') continue ;;
                /*) pattern=$target ;;
                *) pattern=$CONF_DIR/$target ;;
            esac
            for included in $pattern; do
                [ -r "$included" ] && conf_text "$included" $((depth + 1))
            done
        else
            printf '%s\n' "$line"
        fi
    done <"$file"
}

# Dump an Asterisk config as `section<TAB>key<TAB>value` lines (keys lower-cased, `=` or `=>`);
# a section's templates as `section<TAB>(parents)<TAB>a,b` and templates as `section<TAB>(template)`.
conf_dump() {
    conf_text "$1" | awk '
        { sub(/\r$/, ""); line = $0; sub(/[[:space:]]*;.*$/, "", line) }
        line ~ /^[[:space:]]*$/ || line ~ /^[[:space:]]*#/ { next }
        match(line, /^[[:space:]]*\[[^]]+\]/) {
            head = substr(line, RSTART, RLENGTH); sub(/^[[:space:]]*\[/, "", head); sub(/\]$/, "", head)
            section = head; rest = substr(line, RSTART + RLENGTH)
            if (match(rest, /\([^)]*\)/)) {
                parents = substr(rest, RSTART + 1, RLENGTH - 2)
                if (parents ~ /!/) { print section "\t(template)\t"; gsub(/!/, "", parents) }
                gsub(/[[:space:]]/, "", parents)
                if (parents != "" && parents != "+") print section "\t(parents)\t" parents
            }
            next
        }
        section != "" && index(line, "=") {
            key = substr(line, 1, index(line, "=") - 1); value = substr(line, index(line, "=") + 1)
            sub(/^>/, "", value)
            gsub(/^[[:space:]]+|[[:space:]]+$/, "", key); gsub(/^[[:space:]]+|[[:space:]]+$/, "", value)
            print section "\t" tolower(key) "\t" value
        }
    '
}

# The last value of KEY in SECTION of a dump, following the section's templates when it has none.
conf_get() {
    local dump=$1 section=$2 key=$3 value parent
    value=$(printf '%s\n' "$dump" | awk -F'\t' -v s="$section" -v k="$key" '$1 == s && $2 == k { v = $3 } END { print v }')
    if [ -z "$value" ]; then
        for parent in $(printf '%s\n' "$dump" | awk -F'\t' -v s="$section" '$1 == s && $2 == "(parents)" { gsub(/,/, " ", $3); print $3 }'); do
            value=$(conf_get "$dump" "$parent" "$key")
            [ -n "$value" ] && break
        done
    fi
    printf '%s' "$value"
}

conf_has_section() {
    printf '%s\n' "$1" | awk -F'\t' -v s="$2" '$1 == s { found = 1 } END { exit !found }'
}

# Asterisk's ast_true(): yes, true, y, t, 1, on.
is_true() {
    case $(printf '%s' "$1" | tr '[:upper:]' '[:lower:]') in
        yes | true | y | t | 1 | on) return 0 ;;
        *) return 1 ;;
    esac
}

# pydantic's false words, which the connector accepts for a bool setting besides is_true's.
is_false() {
    case $(printf '%s' "$1" | tr '[:upper:]' '[:lower:]') in
        no | false | n | f | 0 | off) return 0 ;;
        *) return 1 ;;
    esac
}

# Whether a comma list of manager classes contains CLASS (or `all`).
has_class() {
    printf '%s' "$1" | tr -d '[:space:]' | tr '[:upper:]' '[:lower:]' | tr ',' '\n' | grep -qx -e "$2" -e all
}

readable_conf() {
    local file=$1
    if [ -r "$file" ]; then
        return 0
    elif [ -e "$file" ]; then
        fail "$file: exists but is not readable by $(id -un 2>/dev/null || echo this user)" \
            "run this script as root (sudo $0)"
    else
        fail "$file: not found" \
            "set ASTERISK_CONFIG_DIR to the folder holding Asterisk's configuration (default /etc/asterisk)"
    fi
    return 1
}

# ---- FreePBX ----------------------------------------------------------------------------------

# FreePBX generates manager.conf, cdr.conf and cdr_manager.conf (and writes the AMI users of its GUI to
# manager_additional.conf); each of them includes *_custom.conf files it never writes. The fixes name the
# file a setting belongs in: Asterisk's own, or the FreePBX one.
detect_freepbx() {
    if ! FREEPBX=$(command -v fwconsole 2>/dev/null); then
        FREEPBX=''
        [ -x /var/lib/asterisk/bin/fwconsole ] && FREEPBX=/var/lib/asterisk/bin/fwconsole
    fi
    if [ -z "$FREEPBX" ]; then
        MANAGER_GENERAL="$CONF_DIR/manager.conf [general]"
        MANAGER_USERS=$CONF_DIR/manager.conf
        CDR_GENERAL="$CONF_DIR/cdr.conf [general]"
        CDR_MANAGER_GENERAL="$CONF_DIR/cdr_manager.conf [general]"
        CDR_MANAGER_MAPPINGS="$CONF_DIR/cdr_manager.conf: [mappings] with the lines"
    else
        # manager_custom.conf is included after the users: (+) adds to the [general] section.
        MANAGER_GENERAL="$CONF_DIR/manager_custom.conf [general](+)"
        MANAGER_USERS=$CONF_DIR/manager_custom.conf
        CDR_GENERAL="$CONF_DIR/cdr_general_custom.conf (FreePBX includes it in cdr.conf [general])"
        CDR_MANAGER_GENERAL="$CONF_DIR/cdr_manager_general_custom.conf (included in cdr_manager.conf [general])"
        CDR_MANAGER_MAPPINGS="$CONF_DIR/cdr_manager_mapping_custom.conf (included in cdr_manager.conf [mappings]) the lines"
    fi
}

report_freepbx() {
    [ -n "$FREEPBX" ] &&
        note "FreePBX detected ($FREEPBX): the fixes name the *_custom.conf files it includes and never overwrites"
    return 0
}

# Whether USER is an AMI user of FreePBX's GUI (Settings > Asterisk Manager Users, in manager_additional.conf).
freepbx_gui_user() {
    local file=$CONF_DIR/manager_additional.conf
    [ -n "$FREEPBX" ] && [ -r "$file" ] && conf_has_section "$(conf_dump "$file")" "$1"
}

# ---- Asterisk ---------------------------------------------------------------------------------

check_asterisk_binary() {
    local path
    if path=$(command -v "$ASTERISK" 2>/dev/null); then
        pass "Asterisk binary: $path"
    else
        fail "Asterisk binary '$ASTERISK' not found on PATH" \
            "run this script on the Asterisk host, as root; or set ASTERISK_BIN=/path/to/asterisk"
    fi
}

check_asterisk_process() {
    local name pids
    name=$(basename "$ASTERISK")
    if command -v pgrep >/dev/null 2>&1; then
        pids=$(pgrep -x "$name" | tr '\n' ' ')
    elif command -v pidof >/dev/null 2>&1; then
        pids=$(pidof "$name")
    else
        warn "Asterisk process: cannot check (neither pgrep nor pidof is installed)" "apt-get install procps"
        return
    fi
    if [ -n "${pids// /}" ]; then
        pass "Asterisk process running (pid ${pids% })"
    else
        fail "Asterisk process is not running" "systemctl start asterisk" \
            "then look at why it stopped: journalctl -u asterisk --since -1h; /var/log/asterisk/messages"
    fi
}

check_asterisk_version() {
    local out version major
    if ! out=$(rx 'core show version'); then
        fail "Asterisk version: the console did not answer ($(first_line "$out"))" \
            "run this script as root while Asterisk runs; test with: asterisk -rx 'core show version'"
        return
    fi
    version=$(printf '%s\n' "$out" | sed -n 's/^Asterisk \([^ ]*\).*/\1/p' | head -n 1)
    major=${version%%.*}
    if [ -z "$version" ]; then
        warn "Asterisk version: unexpected answer ($(first_line "$out"))"
    elif [[ $major =~ ^[0-9]+$ ]] && [ "$major" -lt 14 ]; then
        warn "Asterisk $version: older than 14, \`connector check\` cannot read \`cdr show status\` over AMI" \
            "upgrade to a supported Asterisk release (20 or 22 LTS)"
    else
        pass "Asterisk version: $version"
    fi
}

# ---- AMI ----------------------------------------------------------------------------------------

# The addresses listening on TCP PORT according to `ss -ltn` (one per line, brackets kept for IPv6).
listeners() {
    printf '%s\n' "$1" | awk -v port="$2" '$1 == "LISTEN" {
        addr = $4; n = split(addr, parts, ":")
        if (parts[n] == port) { sub(/:[^:]*$/, "", addr); print addr }
    }'
}

check_ami_port() {
    local port host out addrs want todo
    port=$(setting AMI_PORT 5038)
    host=$(setting AMI_HOST 127.0.0.1)
    if ! command -v ss >/dev/null 2>&1; then
        warn "AMI port $port: cannot check (ss is not installed)" "apt-get install iproute2"
        return
    fi
    if ! out=$(limited ss -ltn 2>&1); then
        warn "AMI port $port: ss failed ($(first_line "$out"))"
        return
    fi
    addrs=$(listeners "$out" "$port" | tr '\n' ' ')
    addrs=${addrs% }
    if [ -z "$addrs" ] && is_true "$(setting AMI_TLS false)"; then
        # 5038 is the plain port: Asterisk's TLS port is 5039 unless tlsbindaddr says otherwise.
        want=$port
        [ "$port" = 5038 ] && want=5039
        todo=("in $MANAGER_GENERAL: tlsenable = yes, tlsbindaddr = 0.0.0.0:$want, and tlscertfile, tlsprivatekey naming PEM files Asterisk can read"
            "then: asterisk -rx 'manager reload' (/var/log/asterisk/messages says why a TLS listener did not start)")
        [ "$want" = "$port" ] || todo+=("and set AMI_PORT=$want in $ENV_FILE")
        fail "AMI port $port: nothing listens on it (AMI_TLS=true: Asterisk's TLS port)" "${todo[@]}"
        return
    elif [ -z "$addrs" ]; then
        fail "AMI port $port: nothing listens on it" \
            "in $MANAGER_GENERAL: enabled = yes, port = $port" \
            "then: asterisk -rx 'manager reload'"
        return
    fi
    [ "$host" = localhost ] && host=127.0.0.1
    case " $addrs " in
        *" $host "* | *" 0.0.0.0 "* | *" * "* | *" [::] "* | *" [$host] "*)
            pass "AMI port $port listening ($addrs)" ;;
        *)
            warn "AMI port $port listens on $addrs, but the connector connects to AMI_HOST=$host" \
                "set AMI_HOST to one of those addresses, or bindaddr in $MANAGER_GENERAL" ;;
    esac
}

check_manager_enabled() {
    local file=$CONF_DIR/manager.conf dump enabled port
    readable_conf "$file" || return
    dump=$(conf_dump "$file")
    enabled=$(conf_get "$dump" general enabled)
    port=$(conf_get "$dump" general port)
    if is_true "$enabled"; then
        pass "manager.conf: AMI enabled (port ${port:-5038})"
    else
        fail "manager.conf: AMI is not enabled (enabled = ${enabled:-unset} in [general])" \
            "in $MANAGER_GENERAL: enabled = yes" "then: asterisk -rx 'manager reload'"
    fi
}

# The port of an Asterisk bind address (`0.0.0.0:5039`, `[::]:5039`), or DEFAULT when it has none.
address_port() {
    local address=$1 default=$2
    case $address in
        \[*\]:*) printf '%s' "${address##*\]:}" ;;
        *:*:* | \[*) printf '%s' "$default" ;; # a bare IPv6 address
        *:*) printf '%s' "${address##*:}" ;;
        *) printf '%s' "$default" ;;
    esac
}

is_loopback() {
    case $1 in
        localhost | 127.* | ::1 | '[::1]') return 0 ;;
        *) return 1 ;;
    esac
}

# AMI_TLS against manager.conf's tlsenable: the connector's TLS needs Asterisk's TLS listener (tlsbindaddr,
# by default bindaddr with port 5039); plain TCP to another host sends the secret and CDRs in clear text.
check_manager_tls() {
    local file=$CONF_DIR/manager.conf dump tls host port tlsenable=unknown bindaddr tlsaddr tlsport state
    local want reload fix
    tls=$(setting AMI_TLS false)
    host=$(setting AMI_HOST 127.0.0.1)
    port=$(setting AMI_PORT 5038)
    if ! is_true "$tls" && ! is_false "$tls"; then
        fail "AMI_TLS=$tls is neither true nor false: the connector refuses to start" \
            "set AMI_TLS=true (Asterisk's TLS port) or AMI_TLS=false (plain TCP) in $ENV_FILE"
        return
    fi
    if [ -r "$file" ]; then
        dump=$(conf_dump "$file")
        tlsenable=$(conf_get "$dump" general tlsenable)
        tlsaddr=$(conf_get "$dump" general tlsbindaddr)
        if [ -z "$tlsaddr" ]; then
            bindaddr=$(conf_get "$dump" general bindaddr)
            bindaddr=${bindaddr:-0.0.0.0}
            case $bindaddr in
                *:*) bindaddr="[${bindaddr#\[}" && bindaddr="${bindaddr%\]}]" ;;
            esac
            tlsaddr="$bindaddr:5039 (the default: bindaddr, port 5039)"
        fi
        tlsport=$(address_port "${tlsaddr%% *}" 5039)
        if is_true "$tlsenable"; then
            state="manager.conf tlsenable=yes, tlsbindaddr=$tlsaddr"
        else
            state="manager.conf tlsenable=no"
        fi
    fi

    if is_true "$tls"; then
        [ "$tlsenable" = unknown ] && return 0 # manager.conf unreadable: reported by check_manager_enabled
        if ! is_true "$tlsenable"; then
            want=$port reload="then: asterisk -rx 'manager reload'"
            [ "$port" = 5038 ] && want=5039 reload="$reload, and set AMI_PORT=5039 in $ENV_FILE"
            state="tlsenable = $tlsenable"
            [ -n "$tlsenable" ] || state="tlsenable is not set"
            fail "AMI TLS: on (AMI_TLS=true), but manager.conf has no tlsenable=yes ($state in [general]): Asterisk offers no TLS port" \
                "in $MANAGER_GENERAL: tlsenable = yes, tlsbindaddr = 0.0.0.0:$want, tlscertfile = /etc/asterisk/keys/asterisk.crt, tlsprivatekey = /etc/asterisk/keys/asterisk.key (PEM files Asterisk can read)" \
                "$reload" \
                "or, for an Asterisk on this host only: AMI_TLS=false in $ENV_FILE"
            return
        fi
        pass "AMI TLS: on (AMI_TLS=true); $state"
        if [ "$port" != "$tlsport" ]; then
            warn "AMI_PORT=$port but Asterisk's TLS port is $tlsport (tlsbindaddr): the TLS handshake will fail" \
                "set AMI_PORT=$tlsport in $ENV_FILE (AMI_TLS=true speaks TLS, which only Asterisk's TLS port answers)"
        fi
    elif ! is_loopback "$host"; then
        fix="set tlsenable=yes in $MANAGER_GENERAL and AMI_TLS=true (with AMI_PORT=5039, the TLS port)"
        is_true "$tlsenable" &&
            fix="Asterisk already offers TLS on $tlsaddr: set AMI_TLS=true and AMI_PORT=$tlsport in $ENV_FILE"
        warn "AMI TLS: off (AMI_TLS=false; ${state:-manager.conf not read}) and AMI_HOST=$host is not loopback: the AMI password and CDRs cross the network in clear text" \
            "$fix"
    elif [ "$tlsenable" != unknown ]; then
        pass "AMI TLS: off (AMI_TLS=false); $state"
    fi
}

manager_users() {
    printf '%s\n' "$1" | awk -F'\t' '
        $2 == "(template)" { template[$1] = 1 }
        { seen[$1] = 1 }
        END { for (s in seen) if (s != "general" && !(s in template)) print s }
    ' | sort | tr '\n' ' '
}

check_manager_user() {
    local file=$CONF_DIR/manager.conf user dump read write users place reload
    readable_conf "$file" || return
    dump=$(conf_dump "$file")
    user=${1:-$(setting AMI_USERNAME '')}
    users=$(manager_users "$dump")
    users=${users% }
    if [ -z "$user" ]; then
        warn "manager.conf user: none given (users found: ${users:-none})" \
            "pass the connector's AMI_USERNAME: $0 USERNAME (or set it in $ENV_FILE)"
        return
    fi
    if ! conf_has_section "$dump" "$user"; then
        fail "manager.conf: no [$user] section (users found: ${users:-none})" \
            "add [$user] to $MANAGER_USERS with secret = AMI_PASSWORD, read = system,call,cdr and write = system,command" \
            "then: asterisk -rx 'manager reload'"
        return
    fi
    place="in $MANAGER_USERS" reload="then: asterisk -rx 'manager reload'"
    if freepbx_gui_user "$user"; then
        # FreePBX rewrites manager_additional.conf from its GUI's table on every reload.
        place="in FreePBX's Settings > Asterisk Manager Users (not manager_additional.conf, which it rewrites)"
        reload="then: Apply Config (fwconsole reload)"
    fi
    read=$(conf_get "$dump" "$user" read)
    if has_class "$read" cdr; then
        pass "manager.conf user $user may read cdr events (read = $read)"
    else
        fail "manager.conf user $user may not read cdr events (read = ${read:-none})" \
            "add cdr to its read line $place: read = ${read:+$read,}cdr" "$reload"
    fi
    write=$(conf_get "$dump" "$user" write)
    if ! has_class "$write" command; then
        warn "manager.conf user $user lacks write = command: \`connector check\` cannot run 'cdr show status'" \
            "add command to its write line $place: write = ${write:+$write,}command" "$reload"
    fi
}

# ---- CDR ----------------------------------------------------------------------------------------

check_cdr_manager_enabled() {
    local file=$CONF_DIR/cdr_manager.conf dump enabled
    readable_conf "$file" || return
    dump=$(conf_dump "$file")
    enabled=$(conf_get "$dump" general enabled)
    if is_true "$enabled"; then
        pass "cdr_manager.conf: enabled = $enabled"
    else
        fail "cdr_manager.conf: not enabled (enabled = ${enabled:-unset} in [general]); no Cdr events are sent" \
            "set enabled = yes in $CDR_MANAGER_GENERAL" "then: asterisk -rx 'module reload cdr_manager.so'"
    fi
}

check_cdr_manager_mappings() {
    local file=$CONF_DIR/cdr_manager.conf dump linkedid sequence
    [ -r "$file" ] || return 0 # reported by check_cdr_manager_enabled
    dump=$(conf_dump "$file")
    linkedid=$(conf_get "$dump" mappings linkedid)
    sequence=$(conf_get "$dump" mappings sequence)
    if [ "$linkedid" = LinkedID ] && [ "$sequence" = Sequence ]; then
        pass "cdr_manager.conf [mappings]: linkedid => LinkedID, sequence => Sequence"
    else
        warn "cdr_manager.conf [mappings]: linkedid => ${linkedid:-missing}, sequence => ${sequence:-missing}; CDRs arrive without LinkedID/Sequence (no call-flow grouping)" \
            "add to $CDR_MANAGER_MAPPINGS linkedid => LinkedID and sequence => Sequence" \
            "then: asterisk -rx 'module reload cdr_manager.so'"
    fi
}

check_cdr_status() {
    local out backend
    if ! out=$(rx 'cdr show status'); then
        fail "cdr show status: the console did not answer ($(first_line "$out"))" \
            "run this script as root while Asterisk runs; test with: asterisk -rx 'cdr show status'"
        check_cdr_batch ''
        return
    fi
    if printf '%s\n' "$out" | grep -Eq '^[[:space:]]*Logging:[[:space:]]+Enabled'; then
        pass "CDR logging enabled"
    else
        fail "CDR logging is not enabled (cdr show status)" \
            "set enable = yes in $CDR_GENERAL" "then: asterisk -rx 'module reload cdr'"
    fi
    backend=$(printf '%s\n' "$out" | grep -E '^[[:space:]]*cdr_manager([[:space:]]|$)' | head -n 1)
    if [ -z "$backend" ]; then
        fail "cdr_manager is not a registered CDR backend: no Cdr events reach AMI" \
            "asterisk -rx 'module load cdr_manager.so' (and remove any noload => cdr_manager.so from modules.conf)"
    elif printf '%s' "$backend" | grep -q suspended; then
        fail "cdr_manager is registered but suspended: it sends no Cdr events (CDRs of this time are lost)" \
            "set enabled = yes in $CDR_MANAGER_GENERAL" \
            "then: asterisk -rx 'module reload cdr_manager.so'"
    else
        pass "cdr_manager registered and active"
    fi
    check_cdr_batch "$out"
}

# The value of a `Label:   value` line of `cdr show status` output (empty when there is none).
status_field() {
    printf '%s\n' "$1" | sed -n "s/^[[:space:]]*$2:[[:space:]]*//p" | head -n 1 | sed 's/[[:space:]]*$//'
}

# Batch mode holds CDRs back: read from `cdr show status` (OUTPUT), or from cdr.conf when the console did
# not answer (OUTPUT empty; Asterisk's defaults: size 100, time 300, safeshutdown yes).
check_cdr_batch() {
    local out=$1 file=$CONF_DIR/cdr.conf dump batch mode size seconds safe source shutdown
    if [ -n "$out" ]; then
        mode=$(status_field "$out" Mode)
        if [ -z "$mode" ]; then
            warn "CDR batch mode: cdr show status has no Mode: line, cannot tell whether CDRs are held back" \
                "make sure batch = no in $CDR_GENERAL"
            return
        elif [ "$mode" != Batch ]; then
            pass "CDR batch mode off (Mode: $mode): each CDR is posted when its call ends"
            return
        fi
        size=$(status_field "$out" 'Maximum batch size')
        seconds=$(status_field "$out" 'Maximum batch time')
        safe=$(status_field "$out" 'Safe shutdown')
        source="cdr show status: Mode: Batch"
    else
        [ -r "$file" ] || return 0 # the console's failure is reported already
        dump=$(conf_dump "$file")
        batch=$(conf_get "$dump" general batch)
        if ! is_true "$batch"; then
            pass "CDR batch mode off (cdr.conf [general] batch = ${batch:-unset, which is no})"
            return
        fi
        size=$(conf_get "$dump" general size)
        seconds=$(conf_get "$dump" general time)
        safe=$(conf_get "$dump" general safeshutdown)
        size=${size:-100} seconds=${seconds:-300} safe=${safe:-yes}
        is_true "$safe" && safe=Enabled
        source="cdr.conf [general] batch = $batch"
    fi
    size=${size%% *} seconds=${seconds%% *} # `100 records`, `5 seconds`
    shutdown="safeshutdown covers only a clean shutdown"
    [ "$safe" = Enabled ] || shutdown="Safe shutdown is off: even a clean shutdown may lose it"
    warn "CDR batch mode: up to ${size:-?} CDRs or ${seconds:-?} s are held before Asterisk posts them ($source): Cdr events arrive up to ${seconds:-?} s late, and the batch held in memory is lost if Asterisk crashes ($shutdown)" \
        "set batch = no in $CDR_GENERAL" "then: asterisk -rx 'module reload cdr'"
}

# ---- Docker and the connector -----------------------------------------------------------------

check_docker() {
    local version
    if [ -z "$CONTAINER" ]; then
        warn "Docker: not checked (CONNECTOR_CONTAINER is empty)"
    elif command -v docker >/dev/null 2>&1; then
        version=$(limited docker --version 2>&1)
        pass "Docker installed: $(first_line "$version")"
    else
        fail "Docker is not installed (the connector runs in a container)" \
            "install Docker Engine and its compose plugin (see https://docs.docker.com/engine/install/)"
    fi
}

check_container() {
    local out line status
    [ -z "$CONTAINER" ] && return
    if ! command -v docker >/dev/null 2>&1; then
        warn "connector container $CONTAINER: cannot check without docker"
        return
    fi
    if ! out=$(limited docker ps --format '{{.Names}}\t{{.Status}}' 2>&1); then
        fail "connector container: cannot list containers ($(first_line "$out"))" \
            "run this script as root (or as a member of the docker group)" "systemctl start docker"
        return
    fi
    line=$(printf '%s\n' "$out" | awk -F'\t' -v name="$CONTAINER" '$1 == name' | head -n 1)
    status=${line#*$'\t'}
    if [ -z "$line" ]; then
        fail "connector container $CONTAINER is not running" \
            "docker compose -f $SCRIPT_DIR/docker-compose.yml up -d" \
            "if it keeps stopping: docker ps -a --filter name=$CONTAINER; docker logs --tail 50 $CONTAINER"
    elif [[ $status == *"(unhealthy)"* ]]; then
        fail "connector container $CONTAINER: $status" \
            "docker logs --tail 50 $CONTAINER" "docker exec $CONTAINER connector check"
    elif [[ $status == *"health: starting"* ]]; then
        warn "connector container $CONTAINER: $status (look again in a minute)"
    else
        pass "connector container $CONTAINER: $status"
    fi
}

# Prints the body, then the HTTP status code on the last line (000: no answer).
http_get() {
    if command -v curl >/dev/null 2>&1; then
        # No -f: a 503 still prints its body, which says why; a refused connection prints 000.
        curl -sS --noproxy '*' -m "$TIMEOUT" -w '\n%{http_code}\n' "$1" 2>&1 || true
    elif command -v python3 >/dev/null 2>&1; then
        python3 - "$1" "$TIMEOUT" <<'PY'
import sys
import urllib.error
import urllib.request

try:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(sys.argv[1], timeout=float(sys.argv[2])) as answer:
        body, code = answer.read(), answer.status
except urllib.error.HTTPError as error:
    body, code = error.read(), error.code
except Exception as error:
    body, code = str(error).encode(), 0
print(body.decode("utf-8", "replace").strip())
print(f"{code:03d}")
PY
    else
        return 127
    fi
}

check_healthz() {
    local host port url out code body
    host=$(setting MONITORING_HOST 0.0.0.0)
    port=$(setting MONITORING_PORT 8000)
    case $host in
        0.0.0.0 | '') host=127.0.0.1 ;;
        :: | '[::]') host='[::1]' ;;
        *:*) host="[${host#\[}" && host="${host%\]}]" ;;
    esac
    url=${CONNECTOR_HEALTH_URL:-http://$host:$port/healthz}
    if ! out=$(http_get "$url"); then
        warn "connector /healthz: cannot check (neither curl nor python3 is installed)"
        return
    fi
    code=$(printf '%s\n' "$out" | tail -n 1)
    body=$(first_line "$(printf '%s\n' "$out" | sed '$d')")
    if [ "$code" = 200 ]; then
        pass "connector $url: 200 $body"
    else
        fail "connector $url: ${code/#000/no answer} ${body}" \
            "docker logs --tail 50 ${CONTAINER:-sipstack-connector}" \
            "check MONITORING_ENABLED, MONITORING_HOST and MONITORING_PORT in $ENV_FILE" \
            "docker exec ${CONTAINER:-sipstack-connector} connector check"
    fi
}

# ---- main ---------------------------------------------------------------------------------------

section() {
    printf '\n%s%s%s\n' "$BOLD" "$1" "$RESET"
}

main() {
    case ${1:-} in
        -h | --help) usage; return 0 ;;
    esac
    detect_freepbx
    section "Asterisk"
    report_freepbx
    check_asterisk_binary
    check_asterisk_process
    check_asterisk_version
    section "AMI"
    check_ami_port
    check_manager_enabled
    check_manager_tls
    check_manager_user "${1:-}"
    section "CDR"
    check_cdr_manager_enabled
    check_cdr_manager_mappings
    check_cdr_status
    section "Connector"
    check_docker
    check_container
    check_healthz
    section "Summary"
    printf '%d passed, %d failed, %d warnings\n' "$PASSED" "$FAILED" "$WARNED"
    if [ -n "$CONTAINER" ]; then
        printf "The connector's own checks (AMI login, API key, DATA_DIR): docker exec %s connector check\n" \
            "$CONTAINER"
    fi
    [ "$FAILED" -eq 0 ]
}

main "$@"
