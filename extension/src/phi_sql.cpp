// SQL glue for the PHI redaction core (phi_redaction.cpp).
#include "boundary.hpp"
#include "phi_redaction.hpp"

extern "C" {

PG_FUNCTION_INFO_V1(tenancy_redact_phi);
Datum tenancy_redact_phi(PG_FUNCTION_ARGS) {
    text *input = PG_GETARG_TEXT_PP(0);
    return tenancy::guard([&]() -> Datum {
        std::string redacted =
            tenancy::redact_phi(std::string_view(VARDATA_ANY(input), VARSIZE_ANY_EXHDR(input)));
        return tenancy::text_datum(redacted);
    });
}
}
