/* Placeholder until the node wiring lands: refuses to start rather than pretending to serve. */
#include <stdio.h>

#include "gateway/options.h"

int spool_run(const struct spool_options *o)
{
    (void)o;
    fprintf(stderr, "spoold: the server is not wired up yet in this build\n");
    return 1;
}
