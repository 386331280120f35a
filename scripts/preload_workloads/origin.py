# The origin story: build millions of small objects, drop them, watch RSS.
import gc, time
def rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
data = [[str(i), (i, i * 2)] for i in range(3_000_000)]
peak = rss_mib()
del data
gc.collect()
start = time.time()
t0 = rss_mib()
time.sleep(0.1)
t100 = rss_mib()
time.sleep(0.9)
t1000 = rss_mib()
print(f"origin peak={peak:.0f} drop={t0:.0f} 100ms={t100:.0f} 1s={t1000:.0f}")
