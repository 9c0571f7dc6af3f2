# Evaluates the NixOS module without nixpkgs (a stand-in `lib`, `pkgs` and
# `config` that are just enough for it) and compares the flakeforge service
# it defines with nixos/service.json, the settings it shares with
# contrib/systemd/flakeforge.service:
#
#   nix-instantiate --eval --strict --json nixos/check-service-settings.nix
#
# prints the list of differences: `[]` when the module's service has every
# shared setting with the same value, and no hardening of its own that the
# file lacks. Both for a port above 1024 and for one below (privilegedPort);
# and, with access control on, that the htpasswd file reaches the service as
# a credential and the policy file is rendered as the server reads it.
# tests/systemd_unit.rs runs it.
let
  shared = builtins.fromJSON (builtins.readFile ./service.json);

  # What the module may set besides the shared settings: how this
  # distribution starts and reloads the program, and its options.
  moduleOnly = {
    serviceConfig = [
      "ExecStart"
      "ExecReload"
      "EnvironmentFile"
      "SupplementaryGroups"
      "LoadCredential"
    ];
    environment = [
      "RUST_LOG"
      "XDG_CONFIG_HOME"
    ];
  };

  # `mkIf false` leaves an attribute out; the stand-in marks it so.
  absent = {
    _absent = true;
  };
  stub = {
    mkIf = condition: value: if condition then value else absent;
    mkOption = option: option;
    mkEnableOption = description: { inherit description; };
    mkPackageOption = _pkgs: name: _extra: { inherit name; };
    literalExpression = text: text;
    types = {
      str = "str";
      bool = "bool";
      port = "port";
      enum = values: values;
      either = a: b: [ a b ];
      listOf = t: [ t ];
      attrsOf = t: [ t ];
      submodule = module: module;
      nonEmptyListOf = t: [ t ];
      nullOr = t: [ t ];
      strMatching = regex: regex;
      ints.positive = "positive";
    };
    optional = condition: value: if condition then [ value ] else [ ];
    optionals = condition: values: if condition then values else [ ];
    optionalAttrs = condition: attrs: if condition then attrs else { };
    optionalString = condition: string: if condition then string else "";
    concatMap = f: list: builtins.concatLists (map f list);
    all = builtins.all;
    hasInfix = infix: s: builtins.match ".*${infix}.*" s != null;
    hasPrefix = prefix: s: builtins.substring 0 (builtins.stringLength prefix) s == prefix;
    # For the check itself: whether `s` holds `needle`, taken literally.
    contains = needle: s: builtins.replaceStrings [ needle ] [ "" ] s != s;
  };

  noAuth = {
    htpasswdFile = null;
    policy = null;
    allowAnonymousPull = false;
  };

  service =
    port: auth:
    let
      cfg = {
        enable = true;
        package = "/flakeforge";
        flake = "/srv/images";
        systems = [ "x86_64-linux" ];
        listen = [ "0.0.0.0" ];
        inherit port;
        openFirewall = false;
        tls = {
          mode = "selfSigned";
          hostnames = [ "registry" ];
          certFile = null;
          keyFile = null;
          useACMEHost = null;
        };
        supplementaryGroups = [ ];
        cacheSize = "10G";
        buildTimeout = 1800;
        maxBuilds = 2;
        compression = "gzip";
        logLevel = "info";
        extraArgs = [ ];
        storage.s3 = {
          bucket = null;
          prefix = "flakeforge";
          endpoint = null;
          region = null;
          redirect = true;
          redirectExpiry = 300;
        };
        environmentFile = null;
        inherit auth;
      };
      module = import ./module.nix {
        lib = stub;
        config = {
          services.flakeforge = cfg;
          nix.package = "/nix";
          nix.enable = true;
          security.acme.certs = { };
          networking.hostName = "registry";
          networking.fqdnOrHostName = "registry";
        };
        pkgs = {
          stdenv.hostPlatform.system = "x86_64-linux";
          coreutils = "/coreutils";
          git = "/git";
          writeTextDir = name: _text: "/${name}";
          writeShellScriptBin = name: _text: "/${name}";
          # The text goes into the path, so that the check can read it.
          writeText = name: text: "/${name}=${text}";
        };
        utils.escapeSystemdExecArgs = builtins.concatStringsSep " ";
      };
      unit = module.config.systemd.services.flakeforge;
      present = attrs: removeAttrs attrs (builtins.filter (name: attrs.${name} == absent) (builtins.attrNames attrs));
    in
    {
      serviceConfig = present unit.serviceConfig;
      inherit (unit) environment;
    };

  expected =
    privileged:
    {
      serviceConfig =
        builtins.foldl' (settings: group: settings // group.settings) { } shared.service
        // (if privileged then shared.privilegedPort.settings else { });
      inherit (shared) environment;
    };

  # "section.Name: ..." for every difference.
  compare =
    label: actual: wanted:
    builtins.concatMap (
      section:
      let
        have = actual.${section};
        want = wanted.${section};
        extra = builtins.filter (
          name: !(want ? ${name}) && !(builtins.elem name moduleOnly.${section})
        ) (builtins.attrNames have);
      in
      map (name: "${label}: ${section}.${name} is not set by the module") (
        builtins.filter (name: !(have ? ${name})) (builtins.attrNames want)
      )
      ++ map (name: "${label}: ${section}.${name} differs: module ${builtins.toJSON have.${name}}, service.json ${builtins.toJSON want.${name}}") (
        builtins.filter (name: have ? ${name} && have.${name} != want.${name}) (builtins.attrNames want)
      )
      ++ map (name: "${label}: ${section}.${name} is set by the module alone: put it into nixos/service.json") extra
    ) [ "serviceConfig" "environment" ];
  # With an htpasswd file and anonymous pulls: the file as a credential, and
  # the policy the server would use without one, plus anonymous pulls.
  withAuth = service 5000 (
    noAuth
    // {
      htpasswdFile = "/run/secrets/htpasswd";
      allowAnonymousPull = true;
    }
  );
  policyJson = builtins.toJSON {
    anonymous.pull = [ "**" ];
    authenticated = {
      pull = [ "**" ];
      build = [ "**" ];
      admin = true;
      refresh = true;
    };
    users = { };
  };
  execStart = withAuth.serviceConfig.ExecStart;
  authProblems =
    stub.optional (withAuth.serviceConfig.LoadCredential or null != [ "htpasswd:/run/secrets/htpasswd" ])
      "auth: LoadCredential is ${builtins.toJSON (withAuth.serviceConfig.LoadCredential or null)}"
    ++ stub.optional (builtins.match ".* --htpasswd %d/htpasswd" execStart == null)
      "auth: ExecStart does not end in --htpasswd %d/htpasswd: ${execStart}"
    ++ stub.optional (!stub.contains "--policy /flakeforge-policy.json=${policyJson} " execStart)
      "auth: ExecStart has not the policy ${policyJson}: ${execStart}"
    ++ stub.optional ((service 5000 noAuth).serviceConfig ? LoadCredential)
      "auth: LoadCredential without an htpasswd file";
in
compare "port 5000" (service 5000 noAuth) (expected false)
++ compare "port 443" (service 443 noAuth) (expected true)
++ compare "port 5000 with access control" withAuth (expected false)
++ authProblems
