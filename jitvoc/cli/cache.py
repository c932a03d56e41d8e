"""`jitvoc cache info` and `jitvoc cache clear`: the compiled-kernel cache's folder and size."""
from .. import cache, config


def register(sub) -> None:
    summary = ("Show or empty the cache of compiled kernels. The folder is $JITVOC_CACHE if set, "
               "else the user cache folder ($XDG_CACHE_HOME/jitvoc or ~/.cache/jitvoc on Linux).")
    p = sub.add_parser("cache", help="show or empty the cache of compiled kernels",
                       description=summary)
    p.add_argument("action", choices=("info", "clear"),
                   help="info prints the folder, its entries and size; clear deletes the entries")
    p.set_defaults(func=_cache)


def _cache(args) -> int:
    if args.action == "clear":
        print(f"removed {cache.clear()} entries from {config.cache_dir()}")
        return 0
    d = cache.info()
    state = "" if d["exists"] else " (not created yet)"
    print(f"folder:  {d['path']}{state}")
    print(f"entries: {d['entries']} ({d['bytes'] / 2**20:.1f} MiB)")
    if d["problem"]:
        print(f"unused:  the folder is {d['problem']}")
    return 0
