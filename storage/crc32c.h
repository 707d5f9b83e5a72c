/* CRC32C (Castagnoli), as used by every checksum Spool writes: SSE4.2 instructions when the CPU
 * has them, a table otherwise. Chain calls with the previous result as `crc` (start with 0). */
#ifndef SPOOL_STORAGE_CRC32C_H
#define SPOOL_STORAGE_CRC32C_H

#include <stddef.h>
#include <stdint.h>

uint32_t spool_crc32c(uint32_t crc, const void *data, size_t len);

#endif
