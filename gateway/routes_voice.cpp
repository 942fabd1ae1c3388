// Routes: voice-AI data: agents, contacts, conversations, escalations, availability (not yet served).
#include "routes_catalog.hpp"

namespace tenancy::gateway {

std::vector<Route> voice_routes() {
    return {};
}

}  // namespace tenancy::gateway
