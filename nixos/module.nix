# services.flakeforge: a container registry that builds images from a Nix
# flake on demand, as a hardened systemd service.
#
# The service runs as a dynamic user (`flakeforge`) and reaches the store
# through the Nix daemon: `nix eval` runs inside the service (it needs a
# writable HOME for ~/.cache/nix, the daemon socket and, for git flakes,
# git), builds run in the daemon.
{
  config,
  lib,
  pkgs,
  utils,
  ...
}:
let
  inherit (lib)
    literalExpression
    mkIf
    mkOption
    types
    ;

  cfg = config.services.flakeforge;

  # The service's settings that every distribution shares (user,
  # directories, hardening), also rendered into contrib/systemd/ by
  # `flakeforge systemd-unit`: one source, so the two cannot drift apart.
  shared = builtins.fromJSON (builtins.readFile ./service.json);
  sharedServiceConfig =
    builtins.foldl' (settings: group: settings // group.settings) { } shared.service
    // lib.optionalAttrs bindsPrivilegedPort shared.privilegedPort.settings;

  # StateDirectory of nixos/service.json. With DynamicUser it is a symlink
  # into /var/lib/private, which only root and the service can enter.
  stateDir = "/var/lib/flakeforge";

  defaultSystems = [ pkgs.stdenv.hostPlatform.system ];

  # "0.0.0.0" -> "0.0.0.0:5000"; "[::]" and "::" -> "[::]:5000".
  listenArg =
    address:
    let
      bracketed =
        if lib.hasInfix ":" address && !lib.hasPrefix "[" address then "[${address}]" else address;
    in
    "${bracketed}:${toString cfg.port}";

  bindsPrivilegedPort = cfg.port < 1024;

  # The certificate tls.useACMEHost names; null when there is none (an
  # assertion says so).
  acmeCert = config.security.acme.certs.${cfg.tls.useACMEHost} or null;
  acmeDirectory =
    if acmeCert != null then acmeCert.directory else "/var/lib/acme/${cfg.tls.useACMEHost}";

  # git refuses to read a repository owned by another user ("dubious
  # ownership"); so does the libgit2 inside newer Nix. The flake a registry
  # serves is trusted by whoever configured it (Nix evaluates its code), and
  # it is usually owned by root or a deploy user, never by the dynamic user.
  # Both git and libgit2 read $XDG_CONFIG_HOME/git/config as global config.
  gitConfigHome = pkgs.writeTextDir "git/config" ''
    [safe]
    	directory = *
  '';

  tlsArgs =
    if cfg.tls.mode == "off" then
      [ "--no-tls" ]
    else if cfg.tls.mode == "files" then
      [
        "--tls-cert"
        cfg.tls.certFile
        "--tls-key"
        cfg.tls.keyFile
      ]
    else
      lib.concatMap (name: [
        "--hostname"
        name
      ]) cfg.tls.hostnames;

  s3 = cfg.storage.s3;
  # Passed only when a bucket is set (and the S3 flags only when they differ
  # from flakeforge's defaults), so flakeforges without S3 keep working.
  storageArgs = lib.optionals (s3.bucket != null) (
    [
      "--storage"
      "s3://${s3.bucket}/${s3.prefix}"
    ]
    ++ lib.optionals (s3.endpoint != null) [
      "--s3-endpoint"
      s3.endpoint
    ]
    ++ lib.optionals (s3.region != null) [
      "--s3-region"
      s3.region
    ]
    ++ lib.optionals (!s3.redirect) [
      "--s3-redirect"
      "false"
    ]
    ++ lib.optionals (s3.redirectExpiry != 300) [
      "--s3-redirect-expiry"
      (toString s3.redirectExpiry)
    ]
  );

  # The flags of `flakeforge serve` that take a number, by option, with
  # flakeforge's own default, which is the option's: a flag is passed only
  # when its option says something else, so that a configuration setting
  # none of them passes none (and keeps working with a flakeforge older
  # than the flag).
  numberFlags = {
    maxEvals = {
      flag = "--max-evals";
      default = 4;
    };
    buildRate = {
      flag = "--build-rate";
      default = 30;
    };
    answerWithin = {
      flag = "--answer-within";
      default = 20;
    };
    negativeTtl = {
      flag = "--negative-ttl";
      default = 30;
    };
    tagTtl = {
      flag = "--tag-ttl";
      default = 60;
    };
    watchInterval = {
      flag = "--watch-interval";
      default = 60;
    };
    maxConnections = {
      flag = "--max-connections";
      default = 512;
    };
    maxConnectionsPerIp = {
      flag = "--max-connections-per-ip";
      default = 128;
    };
  };

  # `--FLAG VALUE` for each of numberFlags set to another value; the other
  # tuning options likewise pass nothing at their defaults.
  tunedArgs =
    lib.concatMap (
      option:
      let
        inherit (numberFlags.${option}) flag default;
      in
      lib.optionals (cfg.${option} != default) [
        flag
        (toString cfg.${option})
      ]
    ) (builtins.attrNames numberFlags)
    ++ lib.concatMap (image: [
      "--prebuild"
      image
    ]) cfg.prebuild
    ++ lib.optional cfg.prebuildAll "--prebuild-all"
    ++ lib.optional (!cfg.serveStale) "--no-stale"
    ++ lib.optional (!cfg.sbom) "--no-sbom"
    ++ lib.optionals (cfg.metricsListen != null) [
      "--metrics-listen"
      cfg.metricsListen
    ];

  args = [
    "${cfg.package}/bin/flakeforge"
    "serve"
    "--flake"
    cfg.flake
    "--state-dir"
    stateDir
    "--build-timeout"
    (toString cfg.buildTimeout)
    "--max-builds"
    (toString cfg.maxBuilds)
    "--cache-size"
    (toString cfg.cacheSize)
    "--compression"
    cfg.compression
    # The client that matches the system's daemon, not the one the package
    # was wrapped with.
    "--nix"
    "${config.nix.package}/bin/nix"
  ]
  ++ lib.concatMap (address: [
    "--listen"
    (listenArg address)
  ]) cfg.listen
  ++ tlsArgs
  ++ storageArgs
  # `--system` came with multi-arch images. The default (the host's system)
  # is what flakeforge serves without the flag, so it is only passed when
  # the list says something else, and older flakeforges keep working.
  ++ lib.optionals (cfg.systems != defaultSystems) (
    lib.concatMap (system: [
      "--system"
      system
    ]) cfg.systems
  )
  ++ authArgs
  ++ tunedArgs
  ++ cfg.extraArgs;

  # Prints the CA certificate clients must trust. It only reads: `flakeforge
  # ca` would create a CA when there is none, and as root that would leave
  # root-owned files in the service's state directory.
  flakeforgeCa = pkgs.writeShellScriptBin "flakeforge-ca" ''
    cert=${stateDir}/tls/ca.crt
    if [ "$EUID" -ne 0 ]; then
      echo "flakeforge-ca: run as root: $cert is readable only by root and the service" >&2
      exit 1
    fi
    if [ ! -e "$cert" ]; then
      echo "flakeforge-ca: no CA yet: flakeforge.service creates it when it first starts (systemctl start flakeforge)" >&2
      exit 1
    fi
    exec ${pkgs.coreutils}/bin/cat -- "$cert"
  '';

  isAbsolute = path: path == null || lib.hasPrefix "/" path;

  # What each part of auth.policy grants (the policy file's format, README
  # "Access control").
  rightsType = types.submodule {
    options = {
      pull = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "hello" "tools/*" ];
        description = "Glob patterns of image names that may be pulled once built (`*` within a segment, `**` across).";
      };
      build = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "**" ];
        description = "Glob patterns of image names that may be built (a new image, tag or composition); implies pull.";
      };
      admin = mkOption {
        type = types.bool;
        default = false;
        description = "Every right, all builds and their logs, and `POST /-/refresh`.";
      };
      refresh = mkOption {
        type = types.bool;
        default = false;
        description = "May ask the server to look at the flake now (`POST /-/refresh`, the git hook).";
      };
    };
  };

  policyType = types.submodule {
    options = {
      anonymous = mkOption {
        type = rightsType;
        default = { };
        description = "The rights of every client, logged in or not.";
      };
      authenticated = mkOption {
        type = rightsType;
        default = { };
        description = "The rights of every user of the htpasswd file, on top of anonymous's.";
      };
      users = mkOption {
        type = types.attrsOf rightsType;
        default = { };
        description = "The rights of each user, on top of authenticated's.";
      };
    };
  };

  everything = {
    pull = [ "**" ];
    build = [ "**" ];
    admin = true;
    refresh = true;
  };

  # Without auth.policy the server's own default: with an htpasswd file,
  # its users may do everything (and anonymous clients nothing).
  basePolicy =
    if cfg.auth.policy != null then
      cfg.auth.policy
    else
      {
        anonymous = { };
        authenticated = if cfg.auth.htpasswdFile != null then everything else { };
        users = { };
      };

  effectivePolicy =
    basePolicy
    // lib.optionalAttrs cfg.auth.allowAnonymousPull {
      anonymous = basePolicy.anonymous // {
        pull = (basePolicy.anonymous.pull or [ ]) ++ [ "**" ];
      };
    };

  writesPolicy = cfg.auth.policy != null || cfg.auth.allowAnonymousPull;
  policyFile = pkgs.writeText "flakeforge-policy.json" (builtins.toJSON effectivePolicy);

  authArgs = lib.optionals writesPolicy [
    "--policy"
    "${policyFile}"
  ];

  # The htpasswd file reaches the dynamic user as a credential (a copy made
  # by systemd at start, readable by the service alone); `%d` is the
  # credentials directory, a systemd specifier: outside the escaped args.
  htpasswdArg = lib.optionalString (cfg.auth.htpasswdFile != null) " --htpasswd %d/htpasswd";
in
{
  options.services.flakeforge = {
    enable = lib.mkEnableOption "flakeforge, a container registry that builds images from a Nix flake on demand";

    package = lib.mkPackageOption pkgs "flakeforge" { };

    flake = mkOption {
      type = types.str;
      example = "github:me/my-images";
      description = ''
        The flake reference to serve. `registry:5000/NAME` is
        `packages.<system>.NAME` of this flake; a tag other than `latest` is
        a git ref of it. A local path must be outside /home and /root (the
        service runs with `ProtectHome`) and readable by the service, for
        example `/srv/images`; a local git work tree is served with its tags
        and branches.
      '';
    };

    systems = mkOption {
      type = types.nonEmptyListOf types.str;
      default = defaultSystems;
      defaultText = literalExpression "[ pkgs.stdenv.hostPlatform.system ]";
      example = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      description = ''
        The Nix systems whose packages are served, each passed as
        `--system` (with several, every tag is an image index of one image
        per system). With the default, the host's own system, no flag is
        passed: that is what flakeforge serves without one, and a
        flakeforge from before multi-arch images has no `--system` flag.
      '';
    };

    listen = mkOption {
      type = types.nonEmptyListOf types.str;
      default = [
        "0.0.0.0"
        "[::]"
      ];
      example = [
        "127.0.0.1"
        "[::1]"
      ];
      description = ''
        Addresses to listen on, each with {option}`port`. flakeforge binds
        IPv6 addresses IPv6-only, so the default takes IPv4 and IPv6
        connections on two sockets. On a host without IPv6 at all
        (`ipv6.disable=1`) use `[ "0.0.0.0" ]`.
      '';
    };

    port = mkOption {
      type = types.port;
      default = 5000;
      description = ''
        TCP port to listen on. A port below 1024 gives the service
        `CAP_NET_BIND_SERVICE` (and nothing else).
      '';
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Whether to open {option}`port` in the firewall.";
    };

    tls = {
      mode = mkOption {
        type = types.enum [
          "selfSigned"
          "files"
          "off"
        ];
        default = if cfg.tls.useACMEHost != null then "files" else "selfSigned";
        defaultText = literalExpression ''if useACMEHost != null then "files" else "selfSigned"'';
        description = ''
          How the registry serves HTTPS:
          - `selfSigned`: a certificate issued by flakeforge's own local CA,
            kept in `/var/lib/flakeforge/tls/`, for {option}`tls.hostnames`
            and the host's addresses. Clients must trust the CA: print it
            with `flakeforge-ca` (as root).
          - `files`: the certificate chain {option}`tls.certFile` and key
            {option}`tls.keyFile` (PEM), re-read when they change, e.g. from
            `security.acme` (see {option}`tls.useACMEHost`).
          - `off`: plain HTTP. Clients must list the registry as insecure.
        '';
      };

      hostnames = mkOption {
        type = types.listOf types.str;
        default = lib.optional (
          cfg.tls.mode == "selfSigned" && config.networking.hostName != ""
        ) config.networking.fqdnOrHostName;
        defaultText = literalExpression ''
          lib.optional (tls.mode == "selfSigned" && config.networking.hostName != "")
            config.networking.fqdnOrHostName
        '';
        example = [
          "registry.lan"
          "10.0.0.7"
        ];
        description = ''
          DNS names and IP addresses clients reach the registry by, put into
          the self-signed certificate (`--hostname`) besides `localhost` and
          the host's own addresses. Only for `tls.mode = "selfSigned"`.
        '';
      };

      certFile = mkOption {
        type = types.nullOr types.str;
        default = if cfg.tls.useACMEHost != null then "${acmeDirectory}/fullchain.pem" else null;
        defaultText = literalExpression ''
          if useACMEHost != null
          then "''${config.security.acme.certs.''${useACMEHost}.directory}/fullchain.pem"
          else null
        '';
        example = "/var/lib/acme/registry.example.org/fullchain.pem";
        description = ''
          PEM certificate chain for `tls.mode = "files"`: an absolute path,
          read at run time (never a Nix path, which would copy it into the
          store). The service must be able to read it: see
          {option}`supplementaryGroups`.
        '';
      };

      keyFile = mkOption {
        type = types.nullOr types.str;
        default = if cfg.tls.useACMEHost != null then "${acmeDirectory}/key.pem" else null;
        defaultText = literalExpression ''
          if useACMEHost != null
          then "''${config.security.acme.certs.''${useACMEHost}.directory}/key.pem"
          else null
        '';
        example = "/var/lib/acme/registry.example.org/key.pem";
        description = ''
          PEM private key (RSA, ECDSA or Ed25519) of {option}`tls.certFile`,
          an absolute path read at run time.
        '';
      };

      useACMEHost = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "registry.example.org";
        description = ''
          Serve the certificate `security.acme.certs.<name>` obtains: sets
          {option}`tls.mode` to `files`, {option}`tls.certFile` and
          {option}`tls.keyFile` to `fullchain.pem` and `key.pem` in the
          certificate's directory, and adds the certificate's group to the
          service. Renewed certificates are picked up without a restart.
        '';
      };
    };

    supplementaryGroups = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "acme" ];
      description = ''
        Extra groups of the service's dynamic user, e.g. to read TLS files
        (`tls.useACMEHost` adds its certificate's group by itself).
      '';
    };

    cacheSize = mkOption {
      type = types.either types.ints.positive (types.strMatching "[0-9]+ *([KkMmGgTt]([Ii]?[Bb])?|[Bb])?");
      default = "10G";
      example = "500M";
      description = ''
        Disk space for cached layer blobs in the state directory (bytes, or
        with a binary unit: `500M`, `10G`, `1T`). The least recently used
        blobs are evicted first and made again on demand.
      '';
    };

    buildTimeout = mkOption {
      type = types.ints.positive;
      default = 1800;
      description = "Seconds a `nix` invocation may take before its whole process group is killed.";
    };

    maxBuilds = mkOption {
      type = types.ints.positive;
      default = 2;
      description = ''
        Builds that run at once; up to 16 times as many wait, beyond that
        clients get `TOOMANYREQUESTS`. The daemon's own limits
        (`nix.settings.max-jobs`) apply on top.
      '';
    };

    compression = mkOption {
      type = types.strMatching "none|gzip(:([1-9]|1[0-2]))?|zstd(:([1-9]|1[0-9]))?";
      default = "gzip";
      example = "zstd:9";
      description = "Layer compression: `none`, `gzip[:LEVEL]` (1-12, default 6) or `zstd[:LEVEL]` (1-19, default 3). `zstd` is faster and smaller; every current client pulls it, some old ones do not.";
    };

    maxEvals = mkOption {
      type = types.ints.positive;
      default = numberFlags.maxEvals.default;
      description = ''
        Other `nix` processes (evaluations, `path-info`, flake metadata)
        that run at once, apart from builds (`--max-evals`).
      '';
    };

    buildRate = mkOption {
      type = types.ints.unsigned;
      default = numberFlags.buildRate.default;
      example = 0;
      description = ''
        Requests per minute from one client address that may start Nix
        work (a build or an evaluation); more get `TOOMANYREQUESTS`. 0: no
        limit (`--build-rate`).
      '';
    };

    answerWithin = mkOption {
      type = types.ints.unsigned;
      default = numberFlags.answerWithin.default;
      description = ''
        Seconds a manifest request waits for its build before it gets a
        retryable `429 TOOMANYREQUESTS` (clients ask again, the build goes
        on); 0 waits for the end of the build (`--answer-within`).
      '';
    };

    negativeTtl = mkOption {
      type = types.ints.unsigned;
      default = numberFlags.negativeTtl.default;
      description = ''
        Seconds an unknown name or ref, or a failed build, stays the answer
        without running Nix again (`--negative-ttl`).
      '';
    };

    tagTtl = mkOption {
      type = types.ints.unsigned;
      default = numberFlags.tagTtl.default;
      description = ''
        Seconds a resolved moving tag (`latest`, a branch) is reused before
        it is resolved again (`--tag-ttl`).
      '';
    };

    serveStale = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Serve a moving tag's last image while its new revision builds;
        false makes pulls wait for the new one (`--no-stale`).
      '';
    };

    prebuild = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [
        "hello"
        "tools/jq:v1.2"
      ];
      description = ''
        Images (`NAME` or `NAME:TAG`) built when the service starts and
        whenever their tag moves, so that the first pull finds them built
        (`--prebuild`).
      '';
    };

    prebuildAll = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Build every package of `packages.<system>` (for every one of
        {option}`systems`, as `latest`) when the service starts and
        whenever the flake moves (`--prebuild-all`).
      '';
    };

    watchInterval = mkOption {
      type = types.ints.unsigned;
      default = numberFlags.watchInterval.default;
      description = ''
        Seconds between looks at the flake's revision (for
        {option}`prebuild` and moving tags); 0 looks only on
        SIGUSR1 or `POST /-/refresh` (`--watch-interval`).
      '';
    };

    sbom = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Attach an SBOM and provenance to the images built (as OCI
        referrers); false attaches neither (`--no-sbom`).
      '';
    };

    maxConnections = mkOption {
      type = types.ints.positive;
      default = numberFlags.maxConnections.default;
      description = ''
        The most open connections; past it an idle one is closed to make
        room, or the newcomer gets a 503 (`--max-connections`). Keep it
        below `LimitNOFILE` (65536).
      '';
    };

    maxConnectionsPerIp = mkOption {
      type = types.ints.positive;
      default = numberFlags.maxConnectionsPerIp.default;
      description = ''
        The most open connections from one client address (an IPv6 /64);
        more get a 503 unless an idle one of theirs can be closed
        (`--max-connections-per-ip`).
      '';
    };

    metricsListen = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "127.0.0.1:9100";
      description = ''
        An address (`IP:PORT`) to serve the Prometheus metrics on, plain
        HTTP and without access control, instead of `/metrics` on the main
        port, where only admins may read them (`--metrics-listen`). The
        firewall is not opened for it.
      '';
    };

    logLevel = mkOption {
      type = types.str;
      default = "info";
      example = "info,flakeforge::nix=debug";
      description = "Log filter (`RUST_LOG`): `error`, `warn`, `info`, `debug`, `trace`, per module if wanted.";
    };

    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [
        "--max-layers"
        "50"
        "--tag-ttl"
        "300"
      ];
      description = ''
        More arguments for `flakeforge serve` (`flakeforge serve --help`).
        Flags the other options already pass must not be repeated here.
      '';
    };

    auth = {
      htpasswdFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/run/secrets/flakeforge-htpasswd";
        description = ''
          An Apache htpasswd file of bcrypt entries (`htpasswd -B`) whose
          users log in to pull and build (`--htpasswd`); with it, clients
          that do not log in may do nothing unless {option}`auth.policy` or
          {option}`auth.allowAnonymousPull` say otherwise, and without
          {option}`auth.policy` every user may do everything. An absolute
          path read when the service starts, never a Nix path (that would
          copy the secret into the world-readable store): it may be
          readable by root alone, systemd hands the service a copy
          (`LoadCredential`). After changing it, restart the service:
          the copy is made at start.
        '';
      };

      policy = mkOption {
        type = types.nullOr policyType;
        default = null;
        example = literalExpression ''
          {
            anonymous.pull = [ "motd" ];
            authenticated.pull = [ "**" ];
            users.alice.admin = true;
            users.ci = { build = [ "app-*" ]; refresh = true; };
          }
        '';
        description = ''
          Who may pull and who may build which images (`--policy`, rendered
          to JSON): glob patterns of image names for `anonymous` clients,
          every `authenticated` user and each of `users`, whose rights add
          up. Without it: with {option}`auth.htpasswdFile` every user may do
          everything, anonymous clients nothing; without either, anyone may
          do anything.
        '';
      };

      allowAnonymousPull = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Let clients that do not log in pull every image that is built
          (adds `**` to `anonymous.pull`); building stays with the users
          the policy allows. Kubernetes nodes pull without imagePullSecrets
          then. docker is the exception: it sends no anonymous requests to
          a registry that asks for a login, so docker users log in.
        '';
      };
    };

    storage.s3 = {
      bucket = mkOption {
        type = types.nullOr (types.strMatching "[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]");
        default = null;
        example = "images";
        description = ''
          An S3-compatible bucket (it must exist) to keep blobs, manifests
          and records in, shared by every replica that names it; null keeps
          them in the state directory. The credentials come from the
          environment: `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` in
          `environmentFile`.
        '';
      };
      prefix = mkOption {
        type = types.strMatching "([A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*)?";
        default = "flakeforge";
        description = "The key prefix in the bucket (without slashes at either end).";
      };
      endpoint = mkOption {
        type = types.nullOr (types.strMatching "https?://.+");
        default = null;
        example = "http://127.0.0.1:8333";
        description = "The endpoint of a self-hosted store (SeaweedFS, MinIO, Garage, Ceph), addressed path-style; null: AWS S3.";
      };
      region = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "eu-central-1";
        description = "The region requests are signed for; null: `AWS_REGION` from the environment, else `us-east-1`.";
      };
      redirect = mkOption {
        type = types.bool;
        default = true;
        description = "Answer layer blob GETs with a 307 to a presigned URL of the bucket; false streams them through the service (for a store clients cannot reach).";
      };
      redirectExpiry = mkOption {
        type = types.ints.between 1 604800;
        default = 300;
        description = "Seconds a redirect's presigned URL stays valid.";
      };
    };

    environmentFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/run/secrets/flakeforge.env";
      description = ''
        An absolute path to a file of `NAME=value` lines for the service's
        environment, read by systemd at start (so it may be readable by
        root only), e.g. `NIX_CONFIG=access-tokens = github.com=ghp_...` to
        serve a private flake, or `AWS_ACCESS_KEY_ID=...` and
        `AWS_SECRET_ACCESS_KEY=...` for `storage.s3`.
      '';
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = config.nix.enable;
        message = "services.flakeforge needs the Nix daemon: nix.enable must be true.";
      }
      {
        assertion = cfg.port > 0;
        message = "services.flakeforge.port must be between 1 and 65535.";
      }
      {
        assertion = cfg.tls.mode == "files" -> (cfg.tls.certFile != null && cfg.tls.keyFile != null);
        message = ''services.flakeforge.tls.mode = "files" needs both tls.certFile and tls.keyFile (or tls.useACMEHost).'';
      }
      {
        assertion = cfg.tls.mode != "files" -> (cfg.tls.certFile == null && cfg.tls.keyFile == null);
        message = ''services.flakeforge.tls.certFile and tls.keyFile are only used with tls.mode = "files" (it is "${cfg.tls.mode}").'';
      }
      {
        assertion = cfg.tls.hostnames != [ ] -> cfg.tls.mode == "selfSigned";
        message = ''
          services.flakeforge.tls.hostnames go into the self-signed certificate, but tls.mode is "${cfg.tls.mode}":
          set tls.hostnames = [ ] or tls.mode = "selfSigned".
        '';
      }
      {
        assertion = cfg.tls.useACMEHost != null -> cfg.tls.mode == "files";
        message = ''services.flakeforge.tls.useACMEHost serves files: it needs tls.mode = "files".'';
      }
      {
        assertion = cfg.tls.useACMEHost != null -> acmeCert != null;
        message = "services.flakeforge.tls.useACMEHost = \"${toString cfg.tls.useACMEHost}\" names no security.acme.certs entry.";
      }
      {
        assertion = lib.all isAbsolute [
          cfg.tls.certFile
          cfg.tls.keyFile
          cfg.environmentFile
          cfg.auth.htpasswdFile
        ];
        message = "services.flakeforge.tls.certFile, tls.keyFile, environmentFile and auth.htpasswdFile must be absolute paths.";
      }
      {
        assertion =
          cfg.auth.htpasswdFile != null && cfg.tls.mode == "off" -> builtins.elem "--allow-insecure-auth" cfg.extraArgs;
        message = ''
          services.flakeforge.auth.htpasswdFile with tls.mode = "off" would send passwords readable on the way:
          serve HTTPS (tls.mode), or add "--allow-insecure-auth" to extraArgs behind a proxy that does TLS.
        '';
      }
      {
        assertion = cfg.auth.allowAnonymousPull -> (cfg.auth.htpasswdFile != null || cfg.auth.policy != null);
        message = "services.flakeforge.auth.allowAnonymousPull: without auth.htpasswdFile or auth.policy anyone may pull (and build) already.";
      }
    ];

    # DynamicUser: the user exists while the service runs and is named after
    # it. extra-allowed-users adds to nix.settings.allowed-users (whose
    # default is everyone) instead of replacing it.
    nix.settings.extra-allowed-users = [ "flakeforge" ];

    networking.firewall.allowedTCPPorts = mkIf cfg.openFirewall [ cfg.port ];

    environment.systemPackages = mkIf (cfg.tls.mode == "selfSigned") [ flakeforgeCa ];

    systemd.services.flakeforge = {
      description = "flakeforge container registry";
      wantedBy = [ "multi-user.target" ];
      # Remote flakes are fetched by the service itself.
      wants = [ "network-online.target" ];
      after = [
        "network-online.target"
        "nix-daemon.socket"
      ]
      ++ lib.optionals (cfg.tls.useACMEHost != null) [
        "acme-${cfg.tls.useACMEHost}.service"
        "acme-selfsigned-${cfg.tls.useACMEHost}.service"
      ];
      requires = [ "nix-daemon.socket" ];

      path = [
        config.nix.package
        pkgs.git
      ];

      # HOME (Nix evaluates in this process and writes ~/.cache/nix) and
      # NIX_REMOTE come from nixos/service.json.
      environment = shared.environment // {
        RUST_LOG = cfg.logLevel;
        XDG_CONFIG_HOME = "${gitConfigHome}";
      };

      serviceConfig = {
        ExecStart = utils.escapeSystemdExecArgs args + htpasswdArg;
        # Re-reads tls.certFile and tls.keyFile at once (it also notices
        # changed files by itself within a second); not auth.htpasswdFile,
        # whose copy systemd makes at start.
        ExecReload = "${pkgs.coreutils}/bin/kill -HUP $MAINPID";
        EnvironmentFile = mkIf (cfg.environmentFile != null) cfg.environmentFile;
        LoadCredential = mkIf (cfg.auth.htpasswdFile != null) [ "htpasswd:${cfg.auth.htpasswdFile}" ];

        SupplementaryGroups =
          cfg.supplementaryGroups
          ++ lib.optional (cfg.tls.useACMEHost != null && acmeCert != null) acmeCert.group;
      }
      # Everything else (user, directories, hardening) is shared with the
      # unit for other distributions: nixos/service.json.
      // sharedServiceConfig;
    };
  };
}
