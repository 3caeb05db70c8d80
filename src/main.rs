//! The `callbridge` command: `serve`, `check-config` and `token`.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use callbridge::auth::{Claims, mint_hs256};
use callbridge::config::{self, Config, Source};

/// WebRTC-to-SIP gateway.
#[derive(Parser)]
#[command(name = "callbridge", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (embedded local defaults when no --config is given).
    Serve {
        /// TOML configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file (with CALLBRIDGE_* overrides applied) and exit.
    CheckConfig {
        /// TOML configuration file.
        file: PathBuf,
    },
    /// Mint a token signed with the configured HS256 secret.
    Token {
        /// User id (`sub`).
        #[arg(long)]
        sub: String,
        /// Space-separated scopes.
        #[arg(long, default_value = "calls:outbound calls:inbound")]
        scope: String,
        /// Lifetime, e.g. 1h, 30m.
        #[arg(long, default_value = "1h")]
        ttl: humantime::Duration,
        /// Caller id claim.
        #[arg(long)]
        caller_id: Option<String>,
        /// An operator token (for /v1 and /healthz detail): `aud` is
        /// auth.admin_audience instead of auth.audience. Needed for scope `admin`.
        #[arg(long)]
        operator: bool,
        /// TOML configuration file holding auth.hs256_secret (or set
        /// CALLBRIDGE_AUTH__HS256_SECRET).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::CheckConfig { file } => {
            let (config, _) = config::load(Some(&file), std::env::vars())?;
            let admin = match config.admin.enabled {
                true => config.admin.listen.to_string(),
                false => "off (/v1 and /metrics on listen, operator token required)".into(),
            };
            println!(
                "{}: ok ({} trunks, {} routes, listen {}, admin {}, tls {})",
                file.display(),
                config.sip.trunks.len(),
                config.dialplan.routes.len(),
                config.server.listen,
                admin,
                if config.tls.is_some() { "on" } else { "off" }
            );
            Ok(())
        }
        Command::Token {
            sub,
            scope,
            ttl,
            caller_id,
            operator,
            config,
        } => {
            if !operator && scope.split_whitespace().any(|s| s == "admin") {
                bail!(
                    "scope `admin` only works in operator tokens: add --operator (the token's aud \
                     is then auth.admin_audience; browser tokens never carry admin rights)"
                );
            }
            let token = TokenRequest {
                sub,
                scope,
                ttl: ttl.into(),
                caller_id,
                operator,
            };
            let Some(path) = config.as_deref() else {
                let secret = std::env::var("CALLBRIDGE_AUTH__HS256_SECRET").context(
                    "no --config given and CALLBRIDGE_AUTH__HS256_SECRET is not set; \
                     the token must be signed with the gateway's HS256 secret",
                )?;
                let cfg = Config::default();
                println!("{}", mint(&secret, &cfg, token)?);
                return Ok(());
            };
            let (cfg, _) = config::load(Some(path), std::env::vars())?;
            if cfg.auth.hs256_secret.is_empty() {
                bail!(
                    "auth.hs256_secret is not set in {}; cannot mint HS256 tokens",
                    path.display()
                );
            }
            println!("{}", mint(&cfg.auth.hs256_secret, &cfg, token)?);
            Ok(())
        }
    }
}

/// What `callbridge token` (or the dev token of `serve`) mints.
struct TokenRequest {
    /// `sub`.
    sub: String,
    /// Space-separated scopes.
    scope: String,
    /// Lifetime.
    ttl: Duration,
    /// `caller_id` claim.
    caller_id: Option<String>,
    /// Operator token: `aud` = auth.admin_audience.
    operator: bool,
}

fn mint(secret: &str, config: &Config, request: TokenRequest) -> anyhow::Result<String> {
    let max = config.auth.max_token_lifetime;
    if request.ttl > max {
        bail!(
            "--ttl {} is longer than auth.max_token_lifetime ({}): the gateway would refuse the token",
            humantime::format_duration(request.ttl),
            humantime::format_duration(max)
        );
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let audience = match request.operator {
        true => &config.auth.admin_audience,
        false => &config.auth.audience,
    };
    let claims = Claims {
        sub: request.sub,
        exp: now + request.ttl.as_secs(),
        nbf: None,
        iat: Some(now),
        aud: Some(callbridge::auth::claims_audience(audience)),
        iss: (!config.auth.issuer.is_empty()).then(|| config.auth.issuer.clone()),
        scope: request.scope,
        caller_id: request.caller_id,
        dids: Vec::new(),
        max_calls: None,
        record: None,
    };
    Ok(mint_hs256(secret, &claims)?)
}

fn serve(path: Option<PathBuf>) -> anyhow::Result<()> {
    let (config, source) = config::load(path.as_deref(), std::env::vars())?;
    init_logging(&config);
    let runtime = tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
    runtime.block_on(async move {
        let dev_secret = (source == Source::Embedded).then(|| config.auth.hs256_secret.clone());
        let dev_config = config.clone();
        let server = callbridge::server::start(config).await?;
        say(&format!(
            "callbridge listening: {}  (health: http://{}/healthz)",
            server.ws_url(),
            server.http_addr
        ));
        match server.admin_addr {
            Some(admin) => say(&format!(
                "operator API and metrics: http://{admin}/v1  http://{admin}/metrics"
            )),
            None => say(
                "no admin listener: /v1 and /metrics on the main listener need an operator token",
            ),
        }
        say(&format!("SIP user agent on udp {}", server.sip_addr));
        callbridge::service_manager::notify("READY=1\nSTATUS=taking calls");
        if let Some(secret) = dev_secret {
            let token = mint(
                &secret,
                &dev_config,
                TokenRequest {
                    sub: "dev".into(),
                    scope: "calls:outbound calls:inbound".into(),
                    ttl: Duration::from_secs(24 * 3600),
                    caller_id: None,
                    operator: false,
                },
            )?;
            say("embedded defaults: dial plan sends every number to a SIP peer at 127.0.0.1:5070");
            say(&format!("dev token (24h, user `dev`):\n{token}"));
        }
        let drain_timeout = dev_config.drain.timeout;
        tokio::select! {
            _ = shutdown_signal() => {
                say(&format!(
                    "draining: no new sessions or calls; waiting up to {} for calls to end \
                     (signal again to stop now)",
                    humantime::format_duration(drain_timeout)
                ));
                server.gateway.drain.start(drain_timeout);
                tokio::select! {
                    _ = server.stopping() => {}
                    _ = shutdown_signal() => say("second signal: stopping now"),
                }
            }
            // A drain started through POST /v1/drain has finished.
            _ = server.stopping() => {}
        }
        say("shutting down");
        server.shutdown(Duration::from_secs(5)).await;
        anyhow::Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Prints a line, ignoring a closed stdout (a supervisor may have dropped it).
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

fn init_logging(config: &Config) {
    let level = std::env::var("CALLBRIDGE_LOG").unwrap_or_else(|_| config.log.level.clone());
    let filter = config::log_filter(&level);
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if config.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
