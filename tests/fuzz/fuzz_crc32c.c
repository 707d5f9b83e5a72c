#include <stdint.h>
#include <stddef.h>
#include "storage/crc32c.h"
int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)spool_crc32c(0, d, n); return 0; }
