// PLACEHOLDER: replaced by the real CLI.
#include <cstdio>
#include "ttfs.h"
int main() { std::printf("%s\n", ttfs_version_string()); return 0; }
