# yaml-flat.awk - the simple, regular subset of YAML that docker-compose.yml
# keeps to, flattened into one record per value:
#
#     PATH<TAB>VALUE        e.g.  services/gateway/command<TAB>rpcd serve ...
#                                 services/gateway/ports/0<TAB>127.0.0.1:7000:7000
#
# Mapping keys are joined with "/", list items get their index. A block
# scalar ("key: |" or "- |") gives one record per line, all with its path;
# the value is those lines joined with newlines. A key with nothing under it
# gives one empty record.
#
# The subset: spaces for indentation (a child deeper than its parent, its
# siblings at the same column); "key: value", "key:", "- value", "key: |",
# "- |"; plain, "double-quoted" (escapes \" and \\ only) and 'single-quoted'
# scalars; full-line comments and " #" comments after plain values. Compose's
# interpolation is applied: "$$" is "$"; any other "$" is an error, since a
# ${VARIABLE} would make the file mean different things on different
# machines. Anything else (flow collections, anchors, aliases, tags, folded
# scalars, multi-document files, lists of mappings) is an error naming the
# line: the file must stay simple enough for this test to read it exactly.
# POSIX awk (mawk, gawk, busybox).

function fail(msg) {
    printf "%s:%d: %s\n", FILENAME, FNR, msg > "/dev/stderr"
    failed = 1
    exit 1
}

# Compose's interpolation on one value.
function interpolate(s,   out, i, c) {
    out = ""
    while ((i = index(s, "$")) > 0) {
        c = substr(s, i + 1, 1)
        if (c != "$")
            fail("a variable (\"$" c "...\"): write $$ for a literal $, and no variables")
        out = out substr(s, 1, i)
        s = substr(s, i + 2)
    }
    return out s
}

# A scalar after "key: " or "- ": quoted or plain, trailing comment removed.
function scalar(v,   q, out, i, c, rest) {
    q = substr(v, 1, 1)
    if (q == "\"" || q == "'") {
        out = ""
        for (i = 2; i <= length(v); i++) {
            c = substr(v, i, 1)
            if (q == "\"" && c == "\\") {
                c = substr(v, ++i, 1)
                if (c != "\"" && c != "\\")
                    fail("only \\\" and \\\\ escapes are understood here")
                out = out c
            } else if (q == "'" && c == "'" && substr(v, i + 1, 1) == "'") {
                out = out "'"
                i++
            } else if (c == q) {
                rest = substr(v, i + 1)
                if (rest !~ /^[ ]*(#.*)?$/)
                    fail("text after a quoted value")
                return interpolate(out)
            } else {
                out = out c
            }
        }
        fail("unterminated quoted value")
    }
    if (v ~ /^[[{&*!%@`>]/ || v ~ /^\|./)
        fail("not in the simple shape (flow lists, anchors, aliases, tags, folded or indented block scalars): " v)
    sub(/[ ]+#.*$/, "", v)
    sub(/[ ]+$/, "", v)
    if (v ~ /: / || v ~ /:$/)
        fail("a plain value with \": \" (quote it): " v)
    return interpolate(v)
}

function emit(path, value) {
    printf "%s\t%s\n", path, value
}

# Close containers deeper than or at column ind; an empty one is an empty value.
function pop_to(ind) {
    while (depth > 0 && st_ind[depth] >= ind) {
        if (!nchild[st_path[depth]])
            emit(st_path[depth], "")
        depth--
    }
}

# The container a line at column ind belongs to; checks sibling alignment and
# that a container holds either keys or items.
function parent_of(ind, kind,   p) {
    pop_to(ind)
    p = depth > 0 ? st_path[depth] : ""
    if (depth > 0 && ind <= st_ind[depth])
        fail("indentation")
    if (p in child_ind) {
        if (child_ind[p] != ind)
            fail("indentation: siblings must start at the same column")
        if (child_kind[p] != kind)
            fail("keys and list items mixed under one key")
    } else {
        child_ind[p] = ind
        child_kind[p] = kind
    }
    nchild[p]++
    return p
}

function join(p, k) {
    return p == "" ? k : p "/" k
}

function flush_block(   i) {
    for (i = 1; i <= nblock; i++)
        emit(block_path, block[i])
    nblock = 0
    in_block = 0
}

BEGIN {
    depth = 0
    in_block = 0
    failed = 0
}

{
    line = $0
    sub(/\r$/, "", line)
    match(line, /^[ ]*/)
    ind = RLENGTH
    body = substr(line, ind + 1)

    # Inside a block scalar: lines deeper than its key, and blank lines.
    if (in_block) {
        if (body == "") {
            pending_blank++
            next
        }
        if (ind > block_parent) {
            if (block_ind < 0)
                block_ind = ind
            if (ind < block_ind)
                fail("block scalar lines must not start left of its first line")
            for (; pending_blank > 0; pending_blank--)
                block[++nblock] = ""
            block[++nblock] = interpolate(substr(line, block_ind + 1))
            next
        }
        flush_block()
    }
    pending_blank = 0

    if (body == "" || body ~ /^#/)
        next
    if (body ~ /^\t/ || line ~ /^[ ]*\t/)
        fail("tabs in indentation")
    if (FNR == 1 && body == "---")
        next
    if (body ~ /^(---|\.\.\.)/)
        fail("one document only")

    if (body ~ /^-( |$)/) { # a list item
        p = parent_of(ind, "seq")
        if (p == "")
            fail("a list at the top level")
        path = join(p, nchild[p] - 1)
        v = substr(body, 3)
        sub(/^[ ]+/, "", v)
        if (v == "")
            fail("an empty list item, or a list of mappings")
        if (v == "|") {
            in_block = 1; block_path = path; block_parent = ind; block_ind = -1; nblock = 0
            next
        }
        if (v ~ /^[A-Za-z0-9_.-]+:( |$)/ && v !~ /^[a-z+]+:\/\//)
            fail("a list of mappings")
        emit(path, scalar(v))
        next
    }

    if (!match(body, /^[A-Za-z0-9_.-]+:( |$)/))
        fail("expected \"key: value\", \"key:\" or \"- item\"")
    key = substr(body, 1, index(body, ":") - 1)
    v = substr(body, length(key) + 2)
    sub(/^[ ]+/, "", v)
    p = parent_of(ind, "map")
    path = join(p, key)
    if (path in seen)
        fail("duplicate key " key)
    seen[path] = 1
    if (v == "" || v ~ /^#/) { # a container: its children follow, deeper
        st_ind[++depth] = ind
        st_path[depth] = path
        nchild[path] = 0
        next
    }
    if (v == "|") {
        in_block = 1; block_path = path; block_parent = ind; block_ind = -1; nblock = 0
        next
    }
    emit(path, scalar(v))
}

END {
    if (failed)
        exit 1
    if (in_block)
        flush_block()
    pop_to(0)
}
