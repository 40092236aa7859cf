//! The jobs a confined helper ([`keel_sandbox::helper`]) runs in-process (`keel-tool-runner
//! sandbox-exec --policy P --job`): tool code that must see the filesystem
//! and the processes exactly as a sandboxed command does, and patches that
//! must write only where the sandbox allows. Each job is a
//! plain struct of its tool's module implementing [`ConfinedJob`]; [`Job`]
//! is what travels on the helper's stdin. The tool-runner side is
//! [`crate::exec::Executor::run_job`].

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::tools::apply_patch::ApplyPatchJob;
use crate::tools::grep::GrepJob;
use crate::tools::list_dir::ListDirJob;
use crate::tools::read_file::ReadFileJob;
use crate::tools::view_image::ViewImageJob;

/// Work that runs inside the sandbox and answers with `Output`.
pub trait ConfinedJob: Sized {
    type Output: Serialize + DeserializeOwned;

    /// Does the work; called inside the confined helper.
    fn run(self) -> Self::Output;

    /// Wraps the job for the helper's stdin.
    fn into_job(self) -> Job;
}

/// Every kind of confined job.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "snake_case")]
pub enum Job {
    ReadFile(ReadFileJob),
    ListDir(ListDirJob),
    GrepFiles(GrepJob),
    ViewImage(ViewImageJob),
    ApplyPatch(ApplyPatchJob),
}

impl keel_sandbox::helper::Job for Job {
    /// Runs the job; its output as JSON.
    fn run(self) -> serde_json::Value {
        fn output<J: ConfinedJob>(job: J) -> serde_json::Value {
            // Plain data always serialises; `null` would fail the caller's
            // parse rather than pass for a result.
            serde_json::to_value(job.run()).unwrap_or(serde_json::Value::Null)
        }
        match self {
            Self::ReadFile(job) => output(job),
            Self::ListDir(job) => output(job),
            Self::GrepFiles(job) => output(job),
            Self::ViewImage(job) => output(job),
            Self::ApplyPatch(job) => output(job),
        }
    }
}
