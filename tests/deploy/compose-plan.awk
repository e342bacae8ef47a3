# compose-plan.awk - reads docker-compose.yml flattened by yaml-flat.awk,
# checks that it is the deployment it should be, and prints how to run the
# same topology on this machine with every tcp address turned into an ipc
# socket under DIR (awk -v dir=DIR) and the gateway's gRPC address turned
# into 127.0.0.1:PORT (awk -v grpc_port=PORT; 0: any free one; the file's
# own port if not given; -v grpc=off leaves the gRPC flags out, for an rpcd
# built without gRPC).
#
# Checked, each failure one line on stderr naming the service:
#   - top-level keys: name, services, x-*; service keys from a known list;
#   - every service uses one image, built by at least one of them (build: .);
#   - a server's command is a valid `rpcd serve` command line (the fixed
#     grammar below, nothing beyond it), listening on tcp://0.0.0.0:PORT and
#     logging to stderr (--log -); its healthcheck is a valid `rpcd call` to
#     one of its own ports on 127.0.0.1;
#   - the head (the gateway) takes gRPC calls from outside: --grpc-listen
#     0.0.0.0:PORT, on a port none of its --listen uses, published in its
#     ports ("127.0.0.1:PORT:PORT"); no other server has --grpc-listen; each
#     --grpc-forward KEY is a lowercase gRPC metadata key (a-z 0-9 - _ .;
#     not grpc-*, not -bin: the test sends it as text);
#   - every --next is tcp://SERVICE:PORT where SERVICE is a server of this
#     file listening on PORT; the servers form one line (each has at most
#     one --next, one head nobody calls, no cycle, all reached); each
#     depends on its next hop being healthy;
#   - the client's command is /bin/sh -c SCRIPT; SCRIPT has only echo lines,
#     comments and `rpcd call` lines, each valid, each to a server's port;
#     the client depends on every server being healthy; its calls cover the
#     three scenarios at the head (a --timeout, a --cancel-after, --value
#     with --trace).
#
# The plan, one line each (words separated by single spaces):
#   serve SERVICE ARGV...    a server's rpcd command, rewritten
#   health SERVICE ARGV...   its healthcheck, rewritten: start the next server
#                            once it passes (servers come from the leaf up)
#   chain SERVICE...         the servers from the head to the leaf
#   grpc SERVICE PORT KEY... the server taking gRPC calls (the head), the port
#                            it takes them on here (127.0.0.1:PORT) and its
#                            --grpc-forward keys (no such line with -v grpc=off)
#   leaf NAME                the --name of the last one (answers Chain)
#   client SERVICE           whose script is written, rewritten, to DIR/client.sh
#   expect N WHAT...         what the script's Nth rpcd call must give:
#       deadline US          DEADLINE_EXCEEDED; every hop started with <= US of budget
#       cancel US            CANCELLED, "cancel: stopped"; every hop got the cancel
#       ok TRACE US K=V...   OK from the leaf with the data and values; a trace id
#                            (TRACE 1) seen by every hop
#       stats NAME           OK, the Stats JSON of the instance named NAME
# POSIX awk.

function err(msg) {
    print "compose: " msg > "/dev/stderr"
    errors++
}

function valid_duration(d) {
    return d ~ /^[0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h)$/
}

# A duration in microseconds (rpcd's units).
function dur_us(d,   num) {
    num = d
    sub(/[a-z]+$/, "", num)
    return num * unit_us[substr(d, length(num) + 1)]
}

function valid_int(v, lo, hi) {
    return v ~ /^[0-9]+$/ && v + 0 >= lo && v + 0 <= hi
}

function valid_url(u) {
    return u ~ /^(tcp|tls\+tcp):\/\/[^\/:]+:[0-9]+$/ || u ~ /^ipc:\/\/\/./ || u ~ /^inproc:\/\/./
}

# Checks `rpcd ...` in w[1..n] against rpcd's fixed command line:
#   rpcd serve --listen URL [--listen URL]... [--name NAME] [--next URL]... [--workers N]
#              [--log FILE|-] [--max-inflight N] [--module PATH.so]...
#              [--grpc-listen HOST:PORT] [--grpc-forward KEY]...
#   rpcd call  URL METHOD [--data TEXT] [--timeout DURATION] [--value KEY=VALUE]...
#              [--cancel-after DURATION] [--trace] [--log FILE|-]
# Returns "" or what is wrong. Sets a_* with what it found.
function check_rpcd(w, n,   i, f, v, pos, nl, nn, nv) {
    split("", a_listen); split("", a_next); split("", a_value); split("", a_forward)
    a_cmd = w[2]; a_name = "rpcd"; a_log = ""; a_url = ""; a_method = ""; a_data = ""
    a_timeout = ""; a_cancel = ""; a_trace = 0; a_nlisten = 0; a_nnext = 0; a_nvalue = 0
    a_grpc = ""; a_nforward = 0
    if (w[1] != "rpcd")
        return "not an rpcd command"
    if (a_cmd != "serve" && a_cmd != "call")
        return "rpcd " a_cmd ": the command is serve or call"
    pos = 0
    for (i = 3; i <= n; i++) {
        f = w[i]
        if (a_cmd == "call" && f == "--trace") { a_trace = 1; continue }
        if (f !~ /^--/) {
            if (a_cmd == "serve" || pos == 2)
                return "unexpected argument " f
            if (++pos == 1) a_url = f; else a_method = f
            continue
        }
        if (i == n)
            return f " needs a value"
        v = w[++i]
        if (a_cmd == "serve") {
            if (f == "--listen") { if (!valid_url(v)) return "--listen " v ": not a URL"; a_listen[++a_nlisten] = v }
            else if (f == "--next") { if (!valid_url(v)) return "--next " v ": not a URL"; a_next[++a_nnext] = v }
            else if (f == "--name") a_name = v
            else if (f == "--log") a_log = v
            else if (f == "--workers") { if (!valid_int(v, 1, 1024)) return "--workers takes 1..1024" }
            else if (f == "--max-inflight") { if (!valid_int(v, 1, 10000000)) return "--max-inflight takes 1..10000000" }
            else if (f == "--module") { if (v !~ /\.so$/) return "--module takes PATH.so" }
            else if (f == "--grpc-listen") {
                if (a_grpc != "") return "--grpc-listen given twice"
                if (v !~ /^[^\/:]+:[0-9]+$/ || !valid_int(port_of(v), 1, 65535)) return "--grpc-listen " v ": not HOST:PORT"
                a_grpc = v
            }
            else if (f == "--grpc-forward") {
                if (v !~ /^[a-z0-9_.-]+$/ || v ~ /^grpc-/ || v ~ /-bin$/ || length(v) > 256)
                    return "--grpc-forward " v ": a lowercase metadata key expected (a-z 0-9 - _ .; not grpc-*, not -bin)"
                a_forward[++a_nforward] = v
            }
            else return "unknown flag " f " (rpcd serve's fixed command line has no such flag)"
        } else {
            if (f == "--data") a_data = v
            else if (f == "--timeout") { if (!valid_duration(v)) return "--timeout " v ": not a duration"; a_timeout = v }
            else if (f == "--cancel-after") { if (!valid_duration(v)) return "--cancel-after " v ": not a duration"; a_cancel = v }
            else if (f == "--value") { if (v !~ /^[!-<>-~][!-~]*=/) return "--value takes KEY=VALUE"; a_value[++a_nvalue] = v }
            else if (f == "--log") a_log = v
            else return "unknown flag " f " (rpcd call's fixed command line has no such flag)"
        }
    }
    if (a_cmd == "serve" && a_nlisten == 0)
        return "rpcd serve needs --listen URL"
    if (a_cmd == "serve" && (a_nlisten > 16 || a_nnext > 16))
        return "at most 16 --listen and 16 --next"
    if (a_cmd == "serve" && a_nforward > 32)
        return "at most 32 --grpc-forward"
    if (a_cmd == "serve" && a_nforward > 0 && a_grpc == "")
        return "--grpc-forward needs --grpc-listen"
    if (a_cmd == "call" && pos != 2)
        return "rpcd call needs URL and METHOD"
    if (a_cmd == "call" && a_nvalue > 64)
        return "at most 64 --value"
    if (a_cmd == "call" && !(a_method in methods))
        return "method " a_method " is not one rpcd serves"
    return ""
}

# Words of a command line: plain words only, so that the shell, Compose and
# this test split it the same way.
function words(s, w,   n) {
    if (s ~ /[][{}()<>|;&~*?$`"'\\]/)
        return -1
    return split(s, w, /[ ]+/)
}

function host_of(u) { sub(/^[a-z+]+:\/\//, "", u); sub(/:[0-9]+$/, "", u); return u }
function port_of(u) { sub(/^.*:/, "", u); return u }
function ipc(svc, port) { return "ipc://" dir "/" svc "." port ".ipc" }

# A call's URL: tcp://SERVICE:PORT of a server here, rewritten.
function call_url(u, who,   h, p) {
    h = host_of(u); p = port_of(u)
    if (u !~ /^tcp:\/\//) { err(who ": " u " is not tcp://SERVICE:PORT"); return u }
    if (!(h in is_server)) { err(who ": " u " names no server of this file"); return u }
    if (!((h SUBSEP p) in listens)) { err(who ": " u ": " h " does not listen on port " p); return u }
    return ipc(h, p)
}

function joined(w, n,   s, i) {
    s = w[1]
    for (i = 2; i <= n; i++) s = s " " w[i]
    return s
}

BEGIN {
    FS = "\t"
    split("/dctx.demo.Demo/Echo /dctx.demo.Demo/Sleep /dctx.demo.Demo/Chain /dctx.demo.Demo/Fail /dctx.Admin/Stats", m, " ")
    for (i in m) methods[m[i]] = 1
    split("ns 0.001 us 1 ms 1000 s 1000000 m 60000000 h 3600000000", uu, " ")
    for (i = 1; i < 12; i += 2) unit_us[uu[i]] = uu[i + 1]
    split("build image command ports expose healthcheck depends_on restart init stop_grace_period", k, " ")
    for (i in k) service_keys[k[i]] = 1
    if (dir == "") { err("usage: awk -v dir=DIR [-v grpc_port=PORT | -v grpc=off] -f compose-plan.awk FLAT"); exit 1 }
    if (grpc_port != "" && !valid_int(grpc_port, 0, 65535)) { err("-v grpc_port=" grpc_port ": a port 0..65535 expected (0: any free one)"); exit 1 }
    if (grpc != "" && grpc != "off") { err("-v grpc=" grpc ": only off"); exit 1 }
}

{
    path = $1
    value = substr($0, length($1) + 2)
    np = split(path, p, "/")
    if (p[1] != "name" && p[1] != "services" && p[1] !~ /^x-/) { err("unknown top-level key " p[1]); next }
    if (p[1] != "services") next
    if (np < 3) { err("services: expected a mapping of services"); next }
    svc = p[2]
    if (!(svc in is_service)) { is_service[svc] = 1; order[++nsvc] = svc }
    if (!(p[3] in service_keys)) { err(svc ": unknown key " p[3] " (the test knows " "build image command ports expose healthcheck depends_on restart init stop_grace_period)"); next }
    if (np == 3) val[svc, p[3]] = value
    else if (p[3] == "command") { # a list: /bin/sh -c SCRIPT
        if ((svc, "cmd", p[4]) in val) val[svc, "cmd", p[4]] = val[svc, "cmd", p[4]] "\n" value
        else { val[svc, "cmd", p[4]] = value; ncmd[svc] = p[4] + 1 }
    } else if (p[3] == "healthcheck" && np == 4) val[svc, "health", p[4]] = value
    else if (p[3] == "ports" && np == 4) ports[svc] = ports[svc] " " value
    else if (p[3] == "depends_on" && np == 5 && p[5] == "condition") dep[svc, p[4]] = value
    else if (p[3] == "depends_on" && np == 4) dep[svc, value] = "service_started"
}

END {
    if (errors) exit 1
    # ---- images -------------------------------------------------------------
    image = ""
    for (i = 1; i <= nsvc; i++) {
        s = order[i]
        if (!((s, "image") in val)) { err(s ": no image"); continue }
        if (image == "") image = val[s, "image"]
        else if (val[s, "image"] != image) err(s ": image " val[s, "image"] ", the others use " image)
        if ((s, "build") in val) {
            built = 1
            if (val[s, "build"] != ".") err(s ": build: the context is the repository's top (build: .)")
        }
    }
    if (!built) err("no service builds the image (build: .)")

    # ---- servers: rpcd serve ------------------------------------------------
    for (i = 1; i <= nsvc; i++) {
        s = order[i]
        if (ncmd[s] > 0) { # a list command: the client
            if (client != "") err(s ": a second client (" client " is one)")
            client = s
            continue
        }
        if (!((s, "command") in val)) { err(s ": no command"); continue }
        n = words(val[s, "command"], w)
        if (n < 0) { err(s ": command: plain words only (no quotes, $, globs or shell syntax)"); continue }
        why = check_rpcd(w, n)
        if (why != "") { err(s ": command: " why); continue }
        if (a_cmd != "serve") { err(s ": command: rpcd serve expected"); continue }
        is_server[s] = 1
        nserv++
        name[s] = a_name
        if (a_log != "-") err(s ": --log - (the container's stderr, `docker compose logs`) expected")
        for (j = 1; j <= a_nlisten; j++) {
            if (a_listen[j] !~ /^tcp:\/\/0\.0\.0\.0:[0-9]+$/) err(s ": --listen " a_listen[j] ": tcp://0.0.0.0:PORT expected")
            listens[s, port_of(a_listen[j])] = 1
        }
        nnext[s] = a_nnext
        for (j = 1; j <= a_nnext; j++) next_url[s, j] = a_next[j]
        if (a_grpc == "") continue
        grpc_of[s] = port_of(a_grpc)
        forward[s] = ""
        for (j = 1; j <= a_nforward; j++) forward[s] = forward[s] " " a_forward[j]
        if (a_grpc !~ /^0\.0\.0\.0:[0-9]+$/) err(s ": --grpc-listen " a_grpc ": 0.0.0.0:PORT expected")
        if ((s SUBSEP grpc_of[s]) in listens) err(s ": --grpc-listen " a_grpc ": port " grpc_of[s] " is one of its --listen ports")
    }
    if (nserv == 0) err("no rpcd serve service")
    if (client == "") err("no client service (command: /bin/sh -c SCRIPT)")
    if (errors) exit 1

    # ---- the chain: --next URLs name servers; one line from a head --------
    for (i = 1; i <= nsvc; i++) {
        s = order[i]
        if (!(s in is_server)) continue
        if (nnext[s] > 1) err(s ": more than one --next; the chain is a line")
        for (j = 1; j <= nnext[s]; j++) {
            u = next_url[s, j]
            h = host_of(u)
            if (u !~ /^tcp:\/\/[^\/:]+:[0-9]+$/) err(s ": --next " u ": tcp://SERVICE:PORT expected")
            else if (!(h in is_server)) err(s ": --next " u " names no server of this file")
            else if (!((h SUBSEP port_of(u)) in listens)) err(s ": --next " u ": " h " does not listen on port " port_of(u))
            else { succ[s] = h; called[h]++ }
        }
    }
    if (errors) exit 1
    head = ""
    for (i = 1; i <= nsvc; i++) {
        s = order[i]
        if ((s in is_server) && !(s in called)) {
            if (head != "") err("two heads: " head " and " s " (nobody's --next)")
            head = s
        }
    }
    if (head == "") err("no head: the --next links make a cycle")
    if (errors) exit 1
    # The gRPC edge: the head, and only the head, takes gRPC calls.
    if (!(head in grpc_of)) err(head ": no --grpc-listen 0.0.0.0:PORT (the head takes gRPC calls from outside)")
    for (i = 1; i <= nsvc; i++) {
        s = order[i]
        if (!(s in grpc_of)) continue
        if (s != head) { err(s ": --grpc-listen: only the head (" head ") takes gRPC calls"); continue }
        # Published on the host: how gRPC clients outside reach it.
        published = 0
        npub = split(ports[s], pub, " ")
        for (j = 1; j <= npub; j++) {
            q = pub[j]
            sub(/\/tcp$/, "", q)
            if (q ~ /:[0-9]+$/ && port_of(q) == grpc_of[s]) published = 1
        }
        if (!published) err(s ": --grpc-listen 0.0.0.0:" grpc_of[s] ": port " grpc_of[s] " not published (ports: \"127.0.0.1:" grpc_of[s] ":" grpc_of[s] "\")")
    }
    chain = head; leaf = head; seen[head] = 1; len = 1
    while (leaf in succ) {
        leaf = succ[leaf]
        if (leaf in seen) { err("a cycle through " leaf); exit 1 }
        seen[leaf] = 1; chain = chain " " leaf; len++
    }
    if (len != nserv) err("the chain " chain " does not reach every server")
    # Each server starts once its next hop answers: its first calls then find
    # the next hop connected (a dial that failed is retried with a backoff).
    for (s in succ)
        if (dep[s, succ[s]] != "service_healthy")
            err(s ": depends_on " succ[s] " with condition service_healthy expected (its --next)")

    # ---- healthchecks -------------------------------------------------------
    for (i = 1; i <= nsvc; i++) {
        s = order[i]
        if (!(s in is_server)) continue
        if (!((s, "health", "test") in val)) { err(s ": no healthcheck test (the client waits for service_healthy)"); continue }
        n = words(val[s, "health", "test"], w)
        why = n < 0 ? "plain words only" : check_rpcd(w, n)
        if (why == "" && a_cmd != "call") why = "rpcd call expected"
        if (why == "" && a_url !~ /^tcp:\/\/(127\.0\.0\.1|localhost):[0-9]+$/) why = a_url ": tcp://127.0.0.1:PORT expected"
        if (why == "" && !((s SUBSEP port_of(a_url)) in listens)) why = a_url ": not a port " s " listens on"
        if (why != "") { err(s ": healthcheck: " why); continue }
        for (j = 1; j <= n; j++) if (w[j] == a_url) w[j] = ipc(s, port_of(a_url))
        health[s] = joined(w, n)
    }

    # ---- the client -----------------------------------------------------------
    if (ncmd[client] != 3 || val[client, "cmd", 0] != "/bin/sh" || val[client, "cmd", 1] != "-c")
        err(client ": command: [/bin/sh, -c, SCRIPT] expected")
    for (i = 1; i <= nsvc; i++) {
        s = order[i]
        if ((s in is_server) && dep[client, s] != "service_healthy")
            err(client ": depends_on " s " with condition service_healthy expected")
    }
    nl = split(val[client, "cmd", 2], line, "\n")
    script = dir "/client.sh"
    printf "" > script
    for (i = 1; i <= nl; i++) {
        l = line[i]
        sub(/^[ ]+/, "", l)
        if (l == "" || l ~ /^#/ || l ~ /^echo( |$)/) { print l > script; continue }
        if (l !~ /^rpcd /) { err(client ": script line " i ": only echo, comments and rpcd call here: " l); continue }
        n = words(l, w)
        why = n < 0 ? "plain words only" : check_rpcd(w, n)
        if (why == "" && a_cmd != "call") why = "rpcd call expected"
        if (why == "" && a_method != "/dctx.demo.Demo/Chain" && a_method != "/dctx.Admin/Stats")
            why = "the test checks Chain and Stats calls only"
        if (why != "") { err(client ": script line " i ": " why); continue }
        calls++
        h = host_of(a_url)
        for (j = 1; j <= n; j++) if (w[j] == a_url) w[j] = call_url(a_url, client ": script line " i)
        # What this call must give: from its flags, as rpcd defines them.
        if (a_method == "/dctx.Admin/Stats") {
            expect[calls] = "stats " name[h]
        } else if (!valid_duration(a_data)) {
            err(client ": script line " i ": Chain's --data is the leaf's sleep, a duration")
        } else {
            if (h != head) err(client ": script line " i ": a Chain call to " h ", not to the head " head)
            data = dur_us(a_data)
            t = a_timeout != "" ? dur_us(a_timeout) : -1
            c = a_cancel != "" ? dur_us(a_cancel) : -1
            if (c >= 0 && c < data && (t < 0 || c < t)) {
                expect[calls] = "cancel " c
                has_cancel = 1
            } else if (t >= 0 && t < data) {
                expect[calls] = "deadline " t
                has_deadline = 1
            } else {
                expect[calls] = "ok " a_trace " " data
                for (j = 1; j <= a_nvalue; j++) expect[calls] = expect[calls] " " a_value[j]
                if (a_nvalue > 0 && a_trace) has_values = 1
            }
        }
        print joined(w, n) > script
    }
    close(script)
    if (!has_deadline) err(client ": no Chain call with --timeout (the deadline scenario)")
    if (!has_cancel) err(client ": no Chain call with --cancel-after (the cancel scenario)")
    if (!has_values) err(client ": no Chain call with --value and --trace (the values scenario)")
    if (errors) exit 1

    # ---- the plan: from the leaf up, as depends_on starts them -----------------
    nc = split(chain, hops, " ")
    for (i = nc; i >= 1; i--) {
        s = hops[i]
        n = words(val[s, "command"], w)
        narg = 0
        for (j = 1; j <= n; j++) {
            v = w[j]
            if (w[j - 1] == "--listen") v = ipc(s, port_of(v))
            if (w[j - 1] == "--next") v = ipc(host_of(v), port_of(v))
            if (w[j - 1] == "--grpc-listen") v = "127.0.0.1:" (grpc_port != "" ? grpc_port : port_of(v))
            # rpcd without gRPC: the gRPC flags and their values left out.
            if (grpc == "off" && (w[j] ~ /^--grpc-/ || w[j - 1] ~ /^--grpc-/)) continue
            arg[++narg] = v
        }
        print "serve", s, joined(arg, narg)
        print "health", s, health[s]
    }
    print "chain", chain
    if (grpc != "off") print "grpc", head, (grpc_port != "" ? grpc_port : grpc_of[head]) forward[head]
    print "leaf", name[leaf]
    print "client", client
    for (i = 1; i <= calls; i++) print "expect", i, expect[i]
}
