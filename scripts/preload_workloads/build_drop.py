# Build a dict of two million small objects, drop it, twice.
for _ in range(2):
    data = {i: (str(i), [i, i + 1]) for i in range(2_000_000)}
    total = sum(len(v[0]) for v in data.values())
    del data
print("build_drop", total)
