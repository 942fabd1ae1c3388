// libFuzzer target for the credential / public id scanner: never reads out of
// bounds, and whatever it accepts is well-formed.
#include "../../extension/src/id_format.hpp"

#include <cstdint>
#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2)
        return 0;
    int ids = 1 + data[0] % 4;
    int secret_len = (data[1] % 2) ? 43 : 0;
    const char *s = reinterpret_cast<const char *>(data + 2);
    int len = static_cast<int>(size - 2);
    tenancy::IdPiece pieces[5];
    int n = tenancy::split_id(s, len, "tnc", 3, ids, secret_len, pieces);
    if (n == 0)
        return 0;
    if (n != ids + (secret_len > 0 ? 1 : 0))
        abort();
    for (int i = 0; i < ids; i++) {
        if (pieces[i].len < 1 || pieces[i].len > 18)
            abort();
        for (int j = 0; j < pieces[i].len; j++)
            if (pieces[i].data[j] < '0' || pieces[i].data[j] > '9')
                abort();
    }
    if (secret_len > 0 && pieces[ids].len != secret_len)
        abort();
    return 0;
}
