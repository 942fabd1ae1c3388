// Routes: sub-users of a main account (not yet served).
#include "routes_catalog.hpp"

namespace tenancy::gateway {

std::vector<Route> sub_user_routes() {
    return {};
}

}  // namespace tenancy::gateway
