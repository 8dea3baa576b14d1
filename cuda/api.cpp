// PLACEHOLDER: replaced by the real API boundary.
#include "ttfs.h"
extern "C" TTFS_API const char* ttfs_version_string(void) { return "0.1.0"; }
