// Copyright (c) Microsoft Corporation.
// Licensed under the MIT License.
use crate::builtins;
use crate::value::Value;

use super::errors::{Result, VmError};
use super::execution_model::ExecutionMode;
use super::machine::RegoVM;

impl RegoVM {
    pub(super) fn execute_function_call(&mut self, params_index: u16) -> Result<()> {
        let params = self
            .program
            .instruction_data
            .get_function_call_params(params_index)
            .cloned()
            .ok_or_else(|| VmError::InvalidFunctionCallParamsIndex {
                index: params_index,
                pc: self.pc,
                available: self.program.instruction_data.function_call_params.len(),
            })?;
        let call_result = match self.execution_mode {
            ExecutionMode::RunToCompletion => {
                self.execute_call_rule_common(params.dest, params.func_rule_index, Some(&params))
            }
            ExecutionMode::Suspendable => self.execute_call_rule_suspendable(
                params.dest,
                params.func_rule_index,
                Some(&params),
            ),
        };

        call_result?;

        self.memory_check()?;
        Ok(())
    }

    pub(super) fn execute_builtin_call(&mut self, params_index: u16) -> Result<()> {
        // What the call needs from the program is copied out under a short borrow, so the
        // program's Arc is not cloned (two atomic operations) on every builtin call.
        let (params, num_args, builtin_fn, cache_name) = {
            let program = &self.program;
            let params = program
                .instruction_data
                .get_builtin_call_params(params_index)
                .ok_or_else(|| VmError::InvalidBuiltinCallParamsIndex {
                    index: params_index,
                    pc: self.pc,
                    available: program.instruction_data.builtin_call_params.len(),
                })?
                .clone();
            let builtin_info = program.get_builtin_info(params.builtin_index).ok_or_else(|| {
                VmError::InvalidBuiltinInfoIndex {
                    index: params.builtin_index,
                    pc: self.pc,
                    available: program.builtin_info_table.len(),
                }
            })?;
            let builtin_fn = program
                .get_resolved_builtin(params.builtin_index)
                .copied()
                .ok_or_else(|| builtin_info.name.clone());
            (
                params,
                builtin_info.num_args,
                builtin_fn,
                builtins::must_cache(builtin_info.name.as_str()),
            )
        };

        let mut args = core::mem::take(&mut self.cached_builtin_args);
        args.clear();
        for &arg_reg in params.arg_registers() {
            match self.get_register(arg_reg) {
                Ok(value) => args.push(value.clone()),
                Err(e) => {
                    self.cached_builtin_args = args;
                    return Err(e);
                }
            }
        }

        let outcome = self.call_builtin(&args, num_args, builtin_fn, cache_name);
        args.clear();
        self.cached_builtin_args = args;

        self.set_register(params.dest, outcome?)?;
        self.memory_check()?;

        Ok(())
    }

    /// Runs a builtin on its arguments: the result, Undefined if an argument is undefined or
    /// the builtin failed outside strict mode, or the error.
    fn call_builtin(
        &mut self,
        args: &[Value],
        num_args: u16,
        builtin_fn: core::result::Result<builtins::BuiltinFcn, alloc::string::String>,
        cache_name: Option<&'static str>,
    ) -> Result<Value> {
        let actual_args = args.len();
        if u16::try_from(actual_args).unwrap_or(u16::MAX) != num_args {
            return Err(VmError::BuiltinArgumentMismatch {
                expected: num_args,
                actual: actual_args,
                pc: self.pc,
            });
        }

        if args.iter().any(|a| a == &Value::Undefined) {
            return Ok(Value::Undefined);
        }

        let builtin_fn = match builtin_fn {
            Ok(fcn) => fcn,
            Err(name) => return Err(VmError::BuiltinNotResolved { name, pc: self.pc }),
        };

        if let Some(name) = cache_name {
            if let Some(entries) = self.builtins_cache.get(name) {
                for entry in entries {
                    if entry.0.as_slice() == args {
                        return Ok(entry.1.clone());
                    }
                }
            }
        }

        self.ensure_dummy_exprs(args.len())?;
        // Borrowed for the call, not cloned: the span's source is another Arc.
        self.get_dummy_span()?;
        let dummy_span = self.dummy_span.as_ref().ok_or_else(|| VmError::Internal {
            message: alloc::string::String::from("dummy span not initialized"),
            pc: self.pc,
        })?;
        let result = match (builtin_fn.0)(
            dummy_span,
            self.dummy_exprs.get(..args.len()).unwrap_or(&[]),
            args,
            self.strict_builtin_errors,
        ) {
            Ok(value) => value,
            // Resource-limit errors must always propagate, even in non-strict
            // mode, to prevent `not builtin(...)` from silently flipping to true.
            Err(e) if !self.strict_builtin_errors => {
                if e.downcast_ref::<crate::LimitError>().is_some() {
                    return Err(e.into());
                }
                Value::Undefined
            }
            Err(err) => return Err(err.into()),
        };

        if let Some(name) = cache_name {
            self.builtins_cache
                .entry(name)
                .or_default()
                .push((args.to_vec(), result.clone()));
        }
        Ok(result)
    }
}
