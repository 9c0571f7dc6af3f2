# Evaluates the NixOS module without nixpkgs (a stand-in `lib`, `pkgs` and
# `config` that are just enough for it) and compares the flakeforge service
# it defines with nixos/service.json, the settings it shares with
# contrib/systemd/flakeforge.service:
#
#   nix-instantiate --eval --strict --json nixos/check-service-settings.nix \
#     --argstr serveHelp "$(flakeforge serve --help)"    # or --arg serveHelp null
#
# prints the list of differences: `[]` when the module's service has every
# shared setting with the same value, and no hardening of its own that the
# file lacks. Both for a port above 1024 and for one below (privilegedPort);
# and, with access control on, that the htpasswd file reaches the service as
# a credential and the policy file is rendered as the server reads it.
# The configurations start from the options' declared defaults; with those,
# ExecStart passes none of the flags of the options that tune `flakeforge
# serve` (flagCases), and each of them set alone adds its flag. Given the
# binary's `serve --help` (serveHelp), also: each of those options' default
# is the binary's own, and every flag of `serve` is passed by some option
# here or named as left to extraArgs.
# tests/systemd_unit.rs runs it (with serveHelp); nixos/check-offline.sh
# too (without: no binary is built yet).
{
  serveHelp ? null,
}:
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
    # Marked, so that the check can tell an option from a group of them.
    mkOption = option: option // { _option = true; };
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
      ints.unsigned = "unsigned";
      ints.between = low: high: "between ${toString low} ${toString high}";
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

  # The options' declared defaults, group by group (those without one,
  # enable, package and flake, are set by `service`).
  defaultsOf =
    options:
    builtins.mapAttrs (
      _: option: if option._option or false then option.default else defaultsOf option
    ) (removeAttrs options [ "enable" "package" "flake" ]);

  # `base` with `settings` put in, group by group.
  update =
    base: settings:
    base
    // builtins.mapAttrs (
      name: value:
      if builtins.isAttrs value && builtins.isAttrs (base.${name} or null) then update base.${name} value else value
    ) settings;

  # The module evaluated with its defaults but for `settings`: its options
  # and the flakeforge service.
  evaluate =
    settings:
    let
      cfg = update (defaultsOf module.options.services.flakeforge) (
        {
          enable = true;
          package = "/flakeforge";
          flake = "/srv/images";
        }
        // settings
      );
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
      options = module.options.services.flakeforge;
      serviceConfig = present unit.serviceConfig;
      inherit (unit) environment;
    };

  service = settings: removeAttrs (evaluate settings) [ "options" ];

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
  withAuth = service {
    auth = {
      htpasswdFile = "/run/secrets/htpasswd";
      allowAnonymousPull = true;
    };
  };
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
    ++ stub.optional ((service { }).serviceConfig ? LoadCredential)
      "auth: LoadCredential without an htpasswd file";

  # The options that tune `flakeforge serve`, each set to something other
  # than its default, and the arguments that must then be in ExecStart.
  flagCases = [
    {
      option = "prebuild";
      value = [
        "hello"
        "tools/jq:v1"
      ];
      args = "--prebuild hello --prebuild tools/jq:v1";
    }
    {
      option = "prebuildAll";
      value = true;
      args = "--prebuild-all";
    }
    {
      option = "watchInterval";
      value = 0;
      args = "--watch-interval 0";
    }
    {
      option = "answerWithin";
      value = 0;
      args = "--answer-within 0";
    }
    {
      option = "serveStale";
      value = false;
      args = "--no-stale";
    }
    {
      option = "negativeTtl";
      value = 5;
      args = "--negative-ttl 5";
    }
    {
      option = "tagTtl";
      value = 300;
      args = "--tag-ttl 300";
    }
    {
      option = "maxEvals";
      value = 8;
      args = "--max-evals 8";
    }
    {
      option = "buildRate";
      value = 0;
      args = "--build-rate 0";
    }
    {
      option = "maxConnections";
      value = 2048;
      args = "--max-connections 2048";
    }
    {
      option = "maxConnectionsPerIp";
      value = 16;
      args = "--max-connections-per-ip 16";
    }
    {
      option = "metricsListen";
      value = "127.0.0.1:9100";
      args = "--metrics-listen 127.0.0.1:9100";
    }
    {
      option = "sbom";
      value = false;
      args = "--no-sbom";
    }
  ];
  flagOf = case: builtins.head (builtins.split " " case.args);
  defaults = evaluate { };
  # ExecStart with the arguments after `serve`, ending in a space.
  argsOf = unit: builtins.elemAt (builtins.split " serve " unit.serviceConfig.ExecStart) 2 + " ";
  flagProblems = builtins.concatMap (
    case:
    let
      declared = defaults.options.${case.option} or { };
      execStart = (service { ${case.option} = case.value; }).serviceConfig.ExecStart;
    in
    if !(declared._option or false) then
      [ "flags: the module declares no option ${case.option} (${flagOf case})" ]
    else
      stub.optional (!(declared ? description) || !(declared ? default))
        "flags: ${case.option} has no description or no default"
      ++ stub.optional (declared.default == case.value)
        "flags: ${case.option}'s default is the value the check sets, ${builtins.toJSON case.value}"
      ++ stub.optional (!stub.contains " ${case.args} " (execStart + " "))
        "flags: ${case.option} = ${builtins.toJSON case.value} does not pass ${case.args}: ${execStart}"
      ++ stub.optional (stub.contains " ${flagOf case} " (argsOf defaults))
        "flags: ${case.option} at its default passes ${flagOf case}: ${defaults.serviceConfig.ExecStart}"
  ) flagCases;

  # What `flakeforge serve --help` says: each flag's paragraph, whitespace
  # collapsed, by flag.
  helpFlags =
    let
      options = builtins.elemAt (builtins.split "\nOptions:\n" serveHelp) 2;
      paragraphs = builtins.filter builtins.isString (builtins.split "\n  --" "\n${options}");
      flagParagraph =
        text:
        let
          words = builtins.filter (w: builtins.isString w && w != "") (builtins.split "[[:space:]]+" text);
        in
        {
          # `--help, help`: the flag without the comma.
          name = "--${builtins.replaceStrings [ "," ] [ "" ] (builtins.head words)}";
          value = builtins.concatStringsSep " " (builtins.tail words);
        };
    in
    builtins.listToAttrs (map flagParagraph (builtins.filter (p: p != "") paragraphs));
  helpDefault =
    flag:
    let
      found = builtins.match ".*\\(default: ([^)]*)\\).*" (helpFlags.${flag} or "");
    in
    if found == null then null else builtins.head found;

  # Flags of `serve` no option passes: set them with extraArgs. The S3
  # credentials come from environmentFile instead of a file.
  leftToExtraArgs = [
    "--s3-credentials"
    "--new-ca"
    "--allow-insecure-auth"
    "--no-legacy-packages"
    "--max-compose"
    "--max-layers"
    "--max-header-bytes"
    "--head-timeout"
    "--keepalive-timeout"
    "--help"
  ];
  # Configurations that together pass every other flag.
  everyFlag = map argsOf (
    [
      defaults
      withAuth
      (service {
        tls.mode = "off";
        auth.htpasswdFile = "/run/secrets/htpasswd";
        extraArgs = [ "--allow-insecure-auth" ];
      })
      (service {
        tls = {
          mode = "files";
          certFile = "/etc/cert.pem";
          keyFile = "/etc/key.pem";
          hostnames = [ ];
        };
        systems = [
          "x86_64-linux"
          "aarch64-linux"
        ];
        storage.s3 = {
          bucket = "images";
          endpoint = "http://127.0.0.1:8333";
          region = "eu-central-1";
          redirect = false;
          redirectExpiry = 60;
        };
      })
    ]
    ++ map (case: service { ${case.option} = case.value; }) flagCases
  );
  helpProblems =
    stub.optional (helpFlags == { }) "help: serveHelp lists no flag: ${serveHelp}"
    ++ builtins.concatMap (
      case:
      let
        flag = flagOf case;
        default = defaults.options.${case.option}.default or null;
      in
      if !(helpFlags ? ${flag}) then
        [ "help: flakeforge serve has no ${flag}" ]
      else
        stub.optional (builtins.isInt default && helpDefault flag != toString default)
          "help: ${case.option} defaults to ${toString default}, flakeforge serve ${flag} to ${toString (helpDefault flag)}"
        ++ stub.optional (!builtins.isInt default && helpDefault flag != null)
          "help: ${case.option} defaults to ${builtins.toJSON default}, flakeforge serve ${flag} to ${helpDefault flag}"
    ) flagCases
    ++ map (flag: "help: no option passes ${flag}: add one, or name it in leftToExtraArgs") (
      builtins.filter (
        flag: !(builtins.elem flag leftToExtraArgs) && !(builtins.any (stub.contains "${flag} ") everyFlag)
      ) (builtins.attrNames helpFlags)
    );
in
compare "port 5000" (service { }) (expected false)
++ compare "port 443" (service { port = 443; }) (expected true)
++ compare "port 5000 with access control" withAuth (expected false)
++ authProblems
++ flagProblems
++ stub.optionals (serveHelp != null) helpProblems
