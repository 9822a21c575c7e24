// leasectl's subcommands, one AddCommandFn (tools/leasectl/cli.h) each.
// main.cc lists them in kCommands; a new family adds its file and a line there.
#pragma once

#include "tools/leasectl/cli.h"

namespace leasefs::leasectl {

// The block map: fallocate.cc, reflink.cc, defrag.cc, bmap.cc.
void AddFallocateCommand(CLI::App& app, int* rc);
void AddReflinkCommand(CLI::App& app, int* rc);
void AddDefragCommand(CLI::App& app, int* rc);
void AddBmapCommand(CLI::App& app, int* rc);

// Layout leases: hold.cc, leases.cc, events.cc.
void AddHoldCommand(CLI::App& app, int* rc);
void AddLeasesCommand(CLI::App& app, int* rc);
void AddEventsCommand(CLI::App& app, int* rc);
void AddDaxCommand(CLI::App& app, int* rc);

// Pins: pins.cc (hold --pin is in hold.cc).
void AddPinsCommand(CLI::App& app, int* rc);
void AddFilePinsCommand(CLI::App& app, int* rc);

// Teaching: scenario_cmd.cc (the scenarios: scenario.h).
void AddScenarioCommand(CLI::App& app, int* rc);

// A live view of a mount: top.cc (its frame: top_format.cc).
void AddTopCommand(CLI::App& app, int* rc);

// A picture of a mount's blocks and lease history: report.cc (pictures and
// page: report_render.cc; the mount's snapshot: snapshot.cc).
void AddReportCommand(CLI::App& app, int* rc);

}  // namespace leasefs::leasectl
