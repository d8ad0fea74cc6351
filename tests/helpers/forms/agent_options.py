"""Fleet's rules for ``agent_options`` (Settings → Agent options, GitOps ``agent_options:``,
``kind: config`` ``spec.agent_options``).

Rules, from Fleet's ``ValidateJSONAgentOptions`` / ``validateJSONAgentOptionsInternal``
(server/fleet/agent_options.go, 4.82 line, fleetdm/fleet ``0575e39c``):

1. The document is decoded strictly: only ``script_execution_timeout`` (at most 3600),
   ``config``, ``overrides`` (only ``platforms``), ``command_line_flags``,
   ``extensions`` and ``update_channels`` are allowed at the top.
2. ``command_line_flags`` is decoded strictly into Fleet's list of osquery command-line
   flags with their Go types (``osqueryCommandLineFlags`` of
   server/fleet/agent_options_generated.go, generated for osquery 5.14.1, plus the
   Linux, Windows, macOS and hidden flag structs of agent_options.go). Flags osquery
   defines as strings, such as ``extensions_timeout``, must be written as strings.
3. ``--host_identifier``, ``--extensions_autoload`` and ``--database_path`` are refused
   ("isn't supported") because they break fleetd: fleetd passes its own.
4. ``config`` and each ``overrides.platforms.<platform>`` are decoded strictly into
   ``osqueryAgentOptions`` (``validateJSONAgentOptionsSet``): ``options`` (the flags
   osquery accepts from a config, ``osqueryOptions``), ``schedule`` and ``packs``
   (not checked), ``file_paths``, ``file_accesses``, ``file_paths_query``,
   ``exclude_paths``, ``yara``, ``prometheus_targets``, ``views``, ``decorators``,
   ``auto_table_construction`` and ``events``; ``options.logger_tls_endpoint`` must
   start with ``/``. A platform set to ``null`` is refused.
5. ``extensions`` maps an extension name to ``channel``, ``platform`` and ``labels``
   (``ExtensionInfo``; decoded without the strict flag); labels are Fleet Premium
   (4.38) and must exist. fleetd (orbit ``ExtensionRunner.Run``,
   orbit/pkg/update/flag_runner.go) keeps only the entries whose ``platform`` is the
   host's (``linux``, ``macos``, ``windows``) and skips names containing ``..``, ``/``
   or ``\\``.
6. ``update_channels`` is Fleet Premium, cannot be null, and has only ``orbit``,
   ``osqueryd`` and ``desktop``, none null or empty.

Fleet validates against the flag list of the release it runs (``fleetctl apply
--force`` skips the check), and ``command_line_flags`` has been validated since Fleet
4.22.0 (CHANGELOG).
"""

from __future__ import annotations

from typing import Any

from tests.helpers.forms.gojson import RAW, GoType, ListOf, MapOf, Struct, go_type_problems

__all__ = [
    "COMMAND_LINE_FLAGS",
    "CONFIG_OPTIONS",
    "FLEETD_OWNED_FLAGS",
    "agent_options_problems",
]


def _table(text: str) -> dict[str, GoType]:
    """``type: name name ...`` lines → {name: type}."""
    out: dict[str, GoType] = {}
    for line in text.strip().splitlines():
        kind, _, names = line.partition(":")
        for name in names.split():
            out[name] = kind.strip()
    return out


# Flags accepted in config.options (``osqueryOptions``, osquery 5.14.1 list).
_CONFIG_OWN = _table("""
bool: audit_allow_config audit_allow_fim_events audit_allow_process_events audit_allow_sockets
bool: audit_allow_user_events aws_debug aws_disable_imdsv1_fallback aws_enable_proxy
bool: aws_kinesis_disable_log_status aws_kinesis_random_partition_key decorations_top_level
bool: disable_audit disable_caching disable_database disable_decorators disable_distributed
bool: disable_events disable_hash_cache disable_logging distributed_loginfo enable_file_events
bool: enable_foreign enable_numeric_monitoring ephemeral es_fim_enable_open_events
bool: events_optimize extensions_default_index ignore_table_exceptions keychain_access_cache
bool: logger_event_type logger_numerics logger_rotate logger_snapshot_event_type
bool: logger_syslog_prepend_cee logger_tls_compress schedule_lognames thrift_verbose
bool: tls_disable_status_log verbose yara_sigurl_authenticate
string: augeas_lenses aws_access_key_id aws_firehose_endpoint aws_firehose_region
string: aws_firehose_stream aws_kinesis_endpoint aws_kinesis_region aws_kinesis_stream
string: aws_profile_name aws_proxy_host aws_proxy_password aws_proxy_scheme aws_proxy_username
string: aws_region aws_secret_access_key aws_session_token aws_sts_arn_role aws_sts_region
string: aws_sts_session_name distributed_plugin distributed_tls_read_endpoint
string: distributed_tls_write_endpoint docker_socket experiment_list host_identifier
string: logger_kafka_acks logger_kafka_brokers logger_kafka_compression logger_kafka_topic
string: logger_path logger_tls_endpoint nullvalue numeric_monitoring_filesystem_path
string: numeric_monitoring_plugins pack_delimiter specified_identifier
uint64: aws_firehose_period aws_kinesis_period aws_sts_timeout buffered_log_max
uint64: distributed_denylist_duration distributed_interval distributed_tls_max_attempts
uint64: events_expiry events_max logger_rotate_max_files logger_rotate_size
uint64: logger_tls_backoff_max logger_tls_max_lines logger_tls_max_linesize logger_tls_period
uint64: numeric_monitoring_pre_aggregation_time pack_refresh_interval read_max
uint64: schedule_default_interval schedule_epoch schedule_max_drift schedule_reload
uint64: schedule_splay_percent schedule_timeout table_delay
uint32: aws_imdsv2_request_attempts aws_imdsv2_request_interval aws_proxy_port hash_cache_max
uint32: keychain_access_interval thrift_timeout yara_delay
int32: logger_min_status logger_min_stderr logger_syslog_facility thrift_string_size_limit
""")

# Flags accepted in command_line_flags (``osqueryCommandLineFlags``, osquery 5.14.1 list).
_CLI_OWN = _table("""
bool: audit_allow_config audit_allow_fim_events audit_allow_process_events audit_allow_sockets
bool: audit_allow_user_events aws_debug aws_disable_imdsv1_fallback aws_enable_proxy
bool: aws_enforce_fips aws_kinesis_disable_log_status aws_kinesis_random_partition_key
bool: carver_compression carver_disable_function config_check config_dump config_enable_backup
bool: daemonize database_dump decorations_top_level disable_audit disable_caching disable_carver
bool: disable_database disable_decorators disable_distributed disable_enrollment disable_events
bool: disable_extensions disable_hash_cache disable_logging disable_reenrollment
bool: disable_watchdog distributed_loginfo enable_extensions_watchdog enable_file_events
bool: enable_foreign enable_numeric_monitoring enable_watchdog_debug enroll_always ephemeral
bool: es_fim_enable_open_events events_optimize extensions_default_index force
bool: ignore_table_exceptions install keychain_access_cache logger_event_type logger_numerics
bool: logger_rotate logger_snapshot_event_type logger_stderr logger_syslog_prepend_cee
bool: logger_tls_compress logtostderr schedule_lognames thrift_verbose tls_disable_status_log
bool: tls_session_reuse uninstall verbose yara_sigurl_authenticate
string: augeas_lenses aws_access_key_id aws_firehose_endpoint aws_firehose_region
string: aws_firehose_stream aws_kinesis_endpoint aws_kinesis_region aws_kinesis_stream
string: aws_profile_name aws_proxy_host aws_proxy_password aws_proxy_scheme aws_proxy_username
string: aws_region aws_secret_access_key aws_session_token aws_sts_arn_role aws_sts_region
string: aws_sts_session_name carver_continue_endpoint carver_start_endpoint config_path
string: config_plugin config_tls_endpoint database_path disable_tables distributed_plugin
string: distributed_tls_read_endpoint distributed_tls_write_endpoint docker_socket
string: enable_tables enroll_secret_env enroll_secret_path enroll_tls_endpoint experiment_list
string: extensions_autoload extensions_interval extensions_require extensions_socket
string: extensions_timeout host_identifier logger_kafka_acks logger_kafka_brokers
string: logger_kafka_compression logger_kafka_topic logger_mode logger_path logger_plugin
string: logger_tls_endpoint nullvalue numeric_monitoring_filesystem_path
string: numeric_monitoring_plugins pack_delimiter pidfile proxy_hostname specified_identifier
string: tls_client_cert tls_client_key tls_hostname tls_server_certs
uint64: alarm_timeout aws_firehose_period aws_kinesis_period aws_sts_timeout buffered_log_max
uint64: config_accelerated_refresh config_refresh config_tls_max_attempts
uint64: distributed_denylist_duration distributed_interval distributed_tls_max_attempts
uint64: events_expiry events_max logger_rotate_max_files logger_rotate_size
uint64: logger_tls_backoff_max logger_tls_max_lines logger_tls_max_linesize logger_tls_period
uint64: numeric_monitoring_pre_aggregation_time pack_refresh_interval read_max
uint64: schedule_default_interval schedule_epoch schedule_max_drift schedule_reload
uint64: schedule_splay_percent schedule_timeout table_delay tls_enroll_max_attempts
uint64: tls_enroll_max_interval watchdog_delay watchdog_forced_shutdown_delay
uint64: watchdog_latency_limit watchdog_memory_limit watchdog_utilization_limit
uint32: aws_imdsv2_request_attempts aws_imdsv2_request_interval aws_proxy_port
uint32: carver_block_size carver_expiry hash_cache_max keychain_access_interval thrift_timeout
uint32: tls_session_timeout yara_delay
int32: logger_min_status logger_min_stderr logger_syslog_facility stderrthreshold
int32: thrift_string_size_limit watchdog_level
""")

# The OS-specific and hidden flags embedded in both lists (agent_options.go).
_EMBEDDED = _table("""
bool: audit_allow_accept_socket_events audit_allow_apparmor_events
bool: audit_allow_failed_socket_events audit_allow_fork_process_events
bool: audit_allow_kill_process_events audit_allow_null_accept_socket_events
bool: audit_allow_seccomp_events audit_allow_selinux_events audit_force_reconfigure
bool: audit_force_unconfigure audit_persist disable_memory enable_bpf_events enable_syslog
bool: keep_container_worker_open
int32: audit_backlog_limit audit_backlog_wait_time
uint64: bpf_buffer_storage_size bpf_perf_event_array_exp malloc_trim_threshold
uint64: syslog_events_expiry syslog_events_max syslog_rate_limit
uint32: experiments_linuxevents_circular_buffer_size experiments_linuxevents_perf_output_size
string: hardware_disabled_types lxd_socket syslog_pipe_path
uint64: users_service_delay users_service_interval groups_service_delay groups_service_interval
bool: enable_ntfs_event_publisher enable_powershell_events_subscriber enable_process_etw_events
bool: enable_windows_events_publisher enable_windows_events_subscriber
bool: ntfs_event_publisher_debug usn_journal_reader_debug
uint32: etw_kernel_trace_buffer_size etw_kernel_trace_flush_timer
uint32: etw_kernel_trace_maximum_buffers etw_kernel_trace_minimum_buffers
uint32: etw_userspace_trace_buffer_size etw_userspace_trace_flush_timer
uint32: etw_userspace_trace_maximum_buffers etw_userspace_trace_minimum_buffers
string: windows_event_channels
bool: disable_endpointsecurity disable_endpointsecurity_fim enable_keyboard_events
bool: enable_mouse_events
string: es_fim_mute_path_literal es_fim_mute_path_prefix
bool: alsologtostderr ignore_registry_exceptions stop_logging_if_full_disk allow_unsafe
bool: tls_dump audit_debug audit_fim_debug audit_show_partial_fim_events
bool: audit_show_untracked_res_warnings audit_fim_show_accesses
string: events_streaming_plugin log_dir
int32: logbufsecs max_log_size minloglevel
""")

# Go gives a struct's own field precedence over an embedded one of the same JSON name.
CONFIG_OPTIONS: dict[str, GoType] = {**_EMBEDDED, **_CONFIG_OWN}
COMMAND_LINE_FLAGS: dict[str, GoType] = {**_EMBEDDED, **_CLI_OWN}

FLEETD_OWNED_FLAGS = ("host_identifier", "extensions_autoload", "database_path")
"""Refused in command_line_flags: fleetd sets them itself (validateJSONAgentOptionsInternal)."""

_STRINGS = ListOf("string")
_OPTION_SET = Struct(
    "osqueryAgentOptions",
    {
        "options": Struct("osqueryOptions", CONFIG_OPTIONS),
        "schedule": RAW,
        "packs": RAW,
        "file_paths": MapOf(_STRINGS),
        "file_accesses": _STRINGS,
        "file_paths_query": MapOf(_STRINGS),
        "exclude_paths": MapOf(_STRINGS),
        "yara": Struct(
            "yara",
            {
                "signatures": MapOf(_STRINGS),
                "file_paths": MapOf(_STRINGS),
                "signature_urls": _STRINGS,
            },
        ),
        "prometheus_targets": Struct("prometheus_targets", {"timeout": "int", "urls": _STRINGS}),
        "views": MapOf("string"),
        "decorators": Struct(
            "decorators", {"load": _STRINGS, "always": _STRINGS, "interval": MapOf(_STRINGS)}
        ),
        "auto_table_construction": MapOf(
            Struct(
                "auto_table_construction",
                {"query": "string", "path": "string", "columns": _STRINGS, "platform": "string"},
            )
        ),
        "events": Struct(
            "events", {"disable_subscribers": _STRINGS, "enable_subscribers": _STRINGS}
        ),
    },
)
_TOP = Struct(
    "AgentOptions",
    {
        "script_execution_timeout": "int",
        "config": RAW,
        "overrides": Struct("AgentOptionsOverrides", {"platforms": MapOf(RAW)}),
        "command_line_flags": RAW,
        "extensions": RAW,
        "update_channels": RAW,
    },
)
_EXTENSION = Struct(
    "ExtensionInfo", {"channel": "string", "platform": "string", "labels": _STRINGS}, strict=False
)
_EXTENSION_PLATFORMS = ("linux", "macos", "windows")
_UPDATE_CHANNELS = Struct(
    "OrbitUpdateChannels", {"orbit": "string", "osqueryd": "string", "desktop": "string"}
)


def _option_set_problems(value: Any, where: str) -> list[str]:
    problems = go_type_problems(value, _OPTION_SET, where)
    options = value.get("options") if isinstance(value, dict) else None
    endpoint = options.get("logger_tls_endpoint") if isinstance(options, dict) else None
    if isinstance(endpoint, str) and endpoint and not endpoint.startswith("/"):
        problems.append(f"{where}.options.logger_tls_endpoint must be a path starting with '/'")
    return problems


def agent_options_problems(doc: Any, *, premium: bool = True) -> list[str]:
    """Problems Fleet (4.82 line) reports for ``doc``, the value of ``agent_options``.

    Args:
        doc: the decoded ``agent_options`` mapping.
        premium: whether the Fleet server has a Premium license (labels on extensions and
            ``update_channels`` need one).
    """
    where = "agent_options"
    if not isinstance(doc, dict):
        return [f"{where}: expected an object"]
    problems = go_type_problems(doc, _TOP, where)
    timeout = doc.get("script_execution_timeout")
    if isinstance(timeout, int) and not isinstance(timeout, bool) and timeout > 3600:
        problems.append(f"{where}.script_execution_timeout exceeds the limit of 3600")

    flags = doc.get("command_line_flags")
    if flags is not None:
        problems += go_type_problems(
            flags,
            Struct("osqueryCommandLineFlags", COMMAND_LINE_FLAGS),
            f"{where}.command_line_flags",
        )
        if isinstance(flags, dict):
            for name in FLEETD_OWNED_FLAGS:
                if flags.get(name) not in (None, ""):
                    problems.append(
                        f"{where}.command_line_flags: the --{name} flag isn't supported by "
                        "Fleet (fleetd sets it; validateJSONAgentOptionsInternal)"
                    )
    if "config" in doc and doc["config"] is not None:
        problems += _option_set_problems(doc["config"], f"{where}.config")
    overrides = doc.get("overrides")
    platforms = overrides.get("platforms") if isinstance(overrides, dict) else None
    if isinstance(platforms, dict):
        for platform, value in platforms.items():
            if value is None:
                problems.append(f"{where}.overrides.platforms.{platform}: cannot be null")
            else:
                problems += _option_set_problems(value, f"{where}.overrides.platforms.{platform}")

    extensions = doc.get("extensions")
    if extensions is not None:
        problems += go_type_problems(extensions, MapOf(_EXTENSION), f"{where}.extensions")
        for name, info in extensions.items() if isinstance(extensions, dict) else ():
            if any(bad in str(name) for bad in ("..", "/", "\\")):
                problems.append(f"{where}.extensions.{name}: fleetd skips names with .. / or \\")
            if isinstance(info, dict):
                if info.get("platform") not in _EXTENSION_PLATFORMS:
                    problems.append(
                        f"{where}.extensions.{name}.platform: fleetd matches linux, macos or "
                        f"windows, not {info.get('platform')!r}"
                    )
                if info.get("labels") and not premium:
                    problems.append(f"{where}.extensions.{name}.labels: needs Fleet Premium")
    if "update_channels" in doc:
        channels = doc["update_channels"]
        if not premium:
            problems.append(f"{where}.update_channels: needs Fleet Premium")
        if channels is None:
            problems.append(f"{where}.update_channels: cannot be null")
        else:
            problems += go_type_problems(channels, _UPDATE_CHANNELS, f"{where}.update_channels")
            for key, value in channels.items() if isinstance(channels, dict) else ():
                if value in (None, ""):
                    problems.append(f"{where}.update_channels.{key}: defined but not set")
    return problems
