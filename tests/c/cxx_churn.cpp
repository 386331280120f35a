// A threaded C++ program (issue 11, defect 6a): eight std::threads build and drop vectors,
// maps, strings, unordered maps and shared_ptrs, and hand records to each other through a
// mutex-protected queue, so that most records are freed on another thread. The printed
// checksums are sums over records and so do not depend on which thread took which: the
// output is the same under glibc and preloaded.
#include <cstdint>
#include <cstdio>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace {

constexpr int kThreads = 8;
constexpr int kRecordsEach = 20000;

struct Record {
    std::string name;
    std::vector<std::uint64_t> values;
    std::map<std::string, int> tags;
};

std::mutex queue_lock;
std::deque<std::shared_ptr<Record>> queue;

std::uint64_t mix(std::uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

std::uint64_t digest(const Record &r) {
    std::uint64_t h = std::hash<std::string>{}(r.name) & 0xffffffff;
    for (auto v : r.values) h = h * 31 + v;
    for (const auto &[k, v] : r.tags) h = h * 131 + k.size() * 7 + v;
    return h;
}

std::shared_ptr<Record> make_record(int thread, int i) {
    auto r = std::make_shared<Record>();
    std::uint64_t x = mix(thread * 1000003ULL + i);
    r->name = "record-" + std::to_string(thread) + "-" + std::to_string(i) +
              std::string(x % 200, 'a' + x % 26);
    r->values.resize(1 + x % 300);
    for (std::size_t j = 0; j < r->values.size(); j++) r->values[j] = mix(x + j) % 1000;
    for (int j = 0; j < static_cast<int>(x % 12); j++)
        r->tags["tag" + std::to_string(j * 37 % 11)] = j;
    return r;
}

struct Totals {
    std::uint64_t handed = 0;    // sum of digests of records taken from the queue
    std::uint64_t records = 0;   // records taken from the queue
    std::uint64_t local = 0;     // thread-local work
};

Totals totals[kThreads];

void worker(int thread) {
    Totals &t = totals[thread];
    std::unordered_map<std::uint64_t, std::string> scratch;
    for (int i = 0; i < kRecordsEach; i++) {
        auto r = make_record(thread, i);
        std::uint64_t key = mix(i) % 512;
        scratch[key] = r->name.substr(0, 16);
        if (i % 64 == 63) {
            for (const auto &[k, v] : scratch) t.local += k + v.size();
            scratch.clear();
        }
        std::shared_ptr<Record> taken;
        {
            std::lock_guard<std::mutex> guard(queue_lock);
            queue.push_back(std::move(r));
            if (queue.size() > 64) {
                taken = std::move(queue.front());
                queue.pop_front();
            }
        }
        if (taken) {
            t.handed += digest(*taken);
            t.records++;
        }
    }
    for (const auto &[k, v] : scratch) t.local += k + v.size();
}

}  // namespace

int main() {
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; i++) threads.emplace_back(worker, i);
    for (auto &t : threads) t.join();
    Totals sum;
    for (const auto &t : totals) {
        sum.handed += t.handed;
        sum.records += t.records;
        sum.local += t.local;
    }
    for (const auto &r : queue) {
        sum.handed += digest(*r);
        sum.records++;
    }
    queue.clear();
    std::printf("c++ churn: %llu records, handed %llu, local %llu\n",
                static_cast<unsigned long long>(sum.records),
                static_cast<unsigned long long>(sum.handed),
                static_cast<unsigned long long>(sum.local));
    return sum.records == static_cast<std::uint64_t>(kThreads) * kRecordsEach ? 0 : 1;
}
