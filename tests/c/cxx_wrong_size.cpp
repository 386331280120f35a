// A sized operator delete given the wrong size (a program bug): ebbmalloc's hardened build
// aborts at the delete with "invalid free"; the default build trusts the size, as Rust's
// dealloc does. Prints "deleted" when it was not stopped.
#include <cstdio>
#include <new>

int main() {
    int *p = new int[100];
    p[0] = 1;
    ::operator delete[](p, sizeof(int));  // allocated with 400 bytes
    std::puts("deleted");
    return 0;
}
