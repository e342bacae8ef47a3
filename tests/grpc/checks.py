"""The checks of the gRPC tests' Python scripts: one "ok:" or "FAIL:" line
each; failures() is how many failed (the scripts' exit status)."""
_failed = 0


def check(what, fine, detail=""):
    global _failed
    if fine:
        print("ok:", what)
    else:
        _failed += 1
        print("FAIL:", what, detail)


def failures():
    return _failed
